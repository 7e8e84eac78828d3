"""Environment variables read by ryot-telemetry. Standard ``OTEL_*`` variables are used where they exist.

Code arguments to ``configure()`` always win over these.
"""

from __future__ import annotations

RYOT_TELEMETRY_MAX_MODELS = "RYOT_TELEMETRY_MAX_MODELS"
"""Distinct model names kept as label values (default 100); later names become ``__overflow__``."""

RYOT_TELEMETRY_MAX_LABEL_LENGTH = "RYOT_TELEMETRY_MAX_LABEL_LENGTH"
"""Longest label value kept, in characters (default 128); longer values are truncated."""

RYOT_TELEMETRY_BUCKETS = "RYOT_TELEMETRY_BUCKETS"
"""JSON object overriding histogram buckets, keyed by OTel or Prometheus name:
``{"ryot_inference_latency_seconds": [0.1, 0.5, 1, 5]}``."""

RYOT_TELEMETRY_PRICE_TABLE = "RYOT_TELEMETRY_PRICE_TABLE"
"""Path of a JSON (or YAML) price table: ``{"model": {"prompt": usd_per_1k, "completion": usd_per_1k}}``, with an
optional ``"cached_prompt"`` price for cached prompt tokens (default: the prompt price)."""

RYOT_TELEMETRY_GENAI_SEMCONV = "RYOT_TELEMETRY_GENAI_SEMCONV"
"""``true`` to also emit the OpenTelemetry GenAI semantic-convention metrics (default false)."""

RYOT_TELEMETRY_GENAI_PROVIDER = "RYOT_TELEMETRY_GENAI_PROVIDER"
"""Value of ``gen_ai.provider.name`` on the semconv metrics (default ``llama_stack``)."""

RYOT_TELEMETRY_GENAI_SERVER = "RYOT_TELEMETRY_GENAI_SERVER"
"""``host:port`` clients reach this server at: ``server.address`` / ``server.port`` of the semconv metrics."""

RYOT_TELEMETRY_GPU = "RYOT_TELEMETRY_GPU"
"""``auto`` (default: NVML gauges when a driver is found), ``true`` or ``false``."""

RYOT_TELEMETRY_GPU_MODELS = "RYOT_TELEMETRY_GPU_MODELS"
"""Model served on each GPU, adding a ``model`` label to its gauges: ``0=llama-3-8b,1=mistral-7b``."""

RYOT_TELEMETRY_MAX_PENDING = "RYOT_TELEMETRY_MAX_PENDING"
"""Finished requests queued before the request path records them itself (default 65536)."""

RYOT_TELEMETRY_PROMETHEUS_REGISTRY = "RYOT_TELEMETRY_PROMETHEUS_REGISTRY"
"""``private`` to expose only ryot-telemetry's series (no process_*/python_* collectors); default ``global``."""

RYOT_TELEMETRY_COMPONENT = "RYOT_TELEMETRY_COMPONENT"
"""``component`` label of ``ryot_service_info`` (default ``inference-router``)."""

RYOT_TELEMETRY_ROUTER_CLASSES = "RYOT_TELEMETRY_ROUTER_CLASSES"
"""Extra router classes ``RyotInstrumentor`` wraps, besides ogx's / llama-stack's ``InferenceRouter``:
``my_service.routers:MyRouter,other.module:Other``."""

RYOT_TELEMETRY_SLOS = "RYOT_TELEMETRY_SLOS"
"""Path of a JSON (or YAML) SLO table enabling ``ryot_slo_requests_total``:
``{"*": {"ttft": 0.5, "tpot": 0.05, "latency": 10, "target": 0.99}}``."""

RYOT_TELEMETRY_MULTIPROC_DIR = "RYOT_TELEMETRY_MULTIPROC_DIR"
"""Directory shared by the worker processes of one server (multi-process mode): whichever worker answers a scrape
shows the whole server's totals. It must exist and be writable."""

RYOT_TELEMETRY_DROP_DUPLICATES = "RYOT_TELEMETRY_DROP_DUPLICATES"
"""``ogx`` to drop ogx's own router histograms that ryot's metrics supersede (``ogx.inference.duration_seconds``,
``.time_to_first_token_seconds``, ``.tokens_per_second``), recorded twice otherwise under ``opentelemetry-instrument``
(default: keep them)."""
RYOT_TELEMETRY_TENANT = "RYOT_TELEMETRY_TENANT"
"""Adds a ``tenant`` label to the request, token, cost and SLO counters (default: none): a dotted path into the
request params such as ``metadata.tenant`` or ``user``, or ``ogx:principal`` / ``ogx:tenant_id`` (ogx's
authenticated user). A callable goes to ``configure(tenant=...)``."""

RYOT_TELEMETRY_MAX_TENANTS = "RYOT_TELEMETRY_MAX_TENANTS"
"""Distinct tenants kept as label values (default 50); later ones become ``__overflow__``."""

RYOT_TELEMETRY_GPU_DETAIL = "RYOT_TELEMETRY_GPU_DETAIL"
"""``true`` to also read NVML's SM and memory clocks, energy, throttle reasons and ECC error counts (default false)."""

RYOT_TELEMETRY_BUDGETS = "RYOT_TELEMETRY_BUDGETS"
"""Path of a JSON (or YAML) budget table, checked at start-up and read by ``ryot-telemetry budget-rules``:
``{"window": "30d", "tenants": {"team-a": 500}, "models": {"gpt-4o": {"usd": 1000, "window": "7d"}}}`` (USD per
rolling window); the generated rules alert at 80% and 100% spent and on a projected overrun."""
