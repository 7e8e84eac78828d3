"""Multi-process mode: the worker side (hand-off thread, leader duties), the shared directory (identity, merge,
archive) and the hand-off encoding.
"""
