"""Regenerate README's metric table and configuration reference: python scripts/gen_docs.py"""

from pathlib import Path

from ryot_telemetry.artifacts.docs import update_readme

readme = Path(__file__).resolve().parents[1] / "README.md"
print("README.md updated" if update_readme(readme) else "README.md already up to date")
