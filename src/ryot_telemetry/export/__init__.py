"""Export: one assembly of the instruments on a provider, the readers (Prometheus, OTLP, console) and the scrape
server with its port ownership.
"""
