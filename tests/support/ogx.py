"""The real llama-stack servers the end-to-end tests start: ``ogx stack run`` (ogx 1.5, llama-stack's new name, in
``.venv312``) and ``llama stack run`` (llama-stack 0.7.3 in ``.venv312-llama-stack``), each with one inference
provider (``remote::vllm`` at a fake OpenAI upstream on loopback), sqlite stores in a temporary folder, model
``llama-8b``, and ryot loaded by ``opentelemetry-instrument`` as the docs' zero-code recipe does.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.polling import until
from support.ports import free_port
from support.procs import stop_group

ROOT = Path(__file__).resolve().parents[2]

_CONFIG = """\
version: 2
distro_name: {distro}
apis: [inference]
providers:
  inference:
  - provider_id: vllm
    provider_type: remote::vllm
    config: {{base_url: "http://127.0.0.1:{upstream}/v1", api_token: fake}}
storage:
  backends:
    kv_default: {{type: kv_sqlite, db_path: "{store}/kvstore.db"}}
    sql_default: {{type: sql_sqlite, db_path: "{store}/sql_store.db"}}
  stores:
    metadata: {{namespace: registry, backend: kv_default}}
    inference: {{table_name: inference_store, backend: sql_default}}
    conversations: {{table_name: openai_conversations, backend: sql_default}}
    prompts: {prompts}
registered_resources:
  models:
  - {{metadata: {{}}, model_id: llama-8b, provider_id: vllm, provider_model_id: upstream-model, model_type: llm}}
server:
{server}
"""

# opentelemetry-instrument's own entry point, run by the 3.12 interpreter itself (a copied venv's console scripts
# may name another interpreter in their shebang).
_INSTRUMENT = "from opentelemetry.instrumentation.auto_instrumentation import run; run()"


@dataclass(frozen=True)
class Stack:
    """One llama-stack server: where it is installed and how its run configuration and command line differ."""

    name: str
    venv: Path
    setup: str  # the script that builds the venv
    cli: str  # the module of its command line
    router: str  # the InferenceRouter class ryot wraps
    prompts: str  # its prompts store: ogx keeps prompts in SQL, llama-stack 0.7 in the key-value store
    server: str  # lines its config's server mapping needs: ogx refuses plain HTTP unless told it is on purpose

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def command(self, config: Path, port: int) -> list[str]:
        """``opentelemetry-instrument <cli> stack run config``; the port on the command line too, because
        llama-stack 0.7's ``--port`` defaults to 8321 (or $LLAMA_STACK_PORT) and then wins over the config's."""
        py = str(self.python)
        return [py, "-c", _INSTRUMENT, py, "-m", self.cli, "stack", "run", str(config), "--port", str(port)]


OGX = Stack(
    "ogx",
    ROOT / ".venv312",
    "scripts/setup.d/llama_stack.sh",
    "ogx.cli.ogx",
    "ogx.core.routers.inference.InferenceRouter",
    "{table_name: prompts, backend: sql_default}",
    "  insecure: true\n",
)
LLAMA_STACK = Stack(
    "llama-stack",
    ROOT / ".venv312-llama-stack",
    "scripts/setup.d/llama_stack_07.sh",
    "llama_stack.cli.llama",
    "llama_stack.core.routers.inference.InferenceRouter",
    "{namespace: prompts, backend: kv_default}",
    "",
)
STACKS = (OGX, LLAMA_STACK)


def stack_config(stack: Stack, distro: str, *, upstream: int, store: str, server: str) -> str:
    """The YAML text; ``server`` is the indented body of its ``server:`` mapping (host, port, workers, auth)."""
    return _CONFIG.format(distro=distro, upstream=upstream, store=store, server=server, prompts=stack.prompts)


def ogx_config(distro: str, *, upstream: int, store: str, server: str) -> str:
    """``stack_config`` for ogx."""
    return stack_config(OGX, distro, upstream=upstream, store=store, server=server)


def recipe_env(stack: Stack, home: Path, metrics_port: int) -> dict[str, str]:
    """The zero-code recipe: ryot's distro and configurator, Prometheus only, on ``metrics_port``."""
    return {
        "PATH": f"{stack.python.parent}:/usr/bin:/bin",
        "HOME": str(home),
        "OTEL_PYTHON_DISTRO": "ryot_telemetry",
        "OTEL_PYTHON_CONFIGURATOR": "ryot_telemetry",
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
        "RYOT_TELEMETRY_GPU": "false",
    }


@dataclass(frozen=True)
class Running:
    base: str  # the stack's HTTP API
    metrics: str  # ryot's /metrics
    log: Path


@contextlib.contextmanager
def running_stack(
    stack: Stack, tmp_path: Path, *, env: dict[str, str] | None = None, server: str = "", within: float = 120
) -> Iterator[Running]:
    """The fake upstream and ``<stack> stack run`` under opentelemetry-instrument, serving on loopback; both stopped
    (the stack's whole process group) on exit. ``server``: more lines of the config's ``server:`` mapping.
    ``env``: more environment for the stack (on top of ``recipe_env``)."""
    store = tmp_path / "store"
    store.mkdir()
    upstream_port, port, metrics_port = free_port(), free_port(), free_port()
    config = tmp_path / "run.yaml"
    body = f"  host: 127.0.0.1\n  port: {port}\n{stack.server}{server}"
    config.write_text(
        stack_config(stack, f"ryot-{stack.name}-test", upstream=upstream_port, store=str(store), server=body)
    )
    upstream = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.apps.openai_upstream:app", "--port", str(upstream_port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log_path = tmp_path / f"{stack.name}.log"
    log = log_path.open("wb")  # the stack logs every request: a file, never a pipe nobody reads
    proc = subprocess.Popen(
        stack.command(config, port),
        cwd=tmp_path,
        env={**recipe_env(stack, tmp_path, metrics_port), **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    running = Running(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics", log_path)

    def served() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{stack.name} exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            return (
                httpx.get(f"{running.base}/v1/models", headers={"x-auth-user": "probe"}, timeout=5).status_code == 200
            )
        except httpx.HTTPError:
            return False

    try:
        until(served, within, f"{stack.name} to serve")
        yield running
    finally:
        stop_group(proc, 20)
        log.close()
        upstream.terminate()
        upstream.wait(timeout=10)
