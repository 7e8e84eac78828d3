"""Regenerate the docs' generated tables (metrics, configuration, benchmark results): python scripts/gen_docs.py"""

from pathlib import Path

from ryot_telemetry.artifacts.docs import update_pages

changed = update_pages(Path(__file__).resolve().parents[1])
print("updated: " + ", ".join(changed) if changed else "docs tables already up to date")
