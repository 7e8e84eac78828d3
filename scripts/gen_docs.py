"""Regenerate the docs' generated tables (metrics, configuration, benchmark results) and the benchmark charts:
python scripts/gen_docs.py [--force-charts]"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benchmarks package draws the charts from its own JSON

from benchmarks.charts import update_charts  # noqa: E402

from ryot_telemetry.artifacts.docs import update_pages  # noqa: E402

changed = update_pages(ROOT)
print("updated: " + ", ".join(changed) if changed else "docs tables already up to date")
drawn = update_charts(ROOT, force="--force-charts" in sys.argv[1:])
print("drawn: " + ", ".join(drawn) if drawn else "charts already up to date")
