"""Real OTLP receivers on loopback (gRPC MetricsService and OTLP/HTTP protobuf) that keep every request.

A receiver can misbehave as collectors do: not started or ``stop()``ped (the endpoint is down: connection refused),
``mode = "refuse"`` (an error answer: HTTP 503 / gRPC UNAVAILABLE, nothing stored) or ``mode = "late"`` (stores the
request, then answers after ``late_s`` seconds: past the exporter's timeout, the sender cannot know it arrived).
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.metrics.v1 import metrics_pb2


class Receiver:
    """Collects every ExportMetricsServiceRequest it is sent; ``start()``/``stop()`` on a fixed port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self._lock = threading.Lock()
        self.mode = "store"  # store, refuse, late
        self.late_s = 2.0
        self.refused = 0  # requests answered with an error

    def received(self, req: metrics_service_pb2.ExportMetricsServiceRequest) -> bool:
        """Keep ``req`` unless refusing (then False: answer with an error); when late, wait before answering."""
        mode = self.mode
        if mode == "refuse":
            with self._lock:
                self.refused += 1
            return False
        with self._lock:
            self.requests.append(req)
        if mode == "late":
            time.sleep(self.late_s)
        return True

    def total(self, name: str) -> float:
        """The sum of every point of counter ``name`` over every request kept (delta temporality: the total)."""
        return sum(p.as_int or p.as_double for _, p in self.points(name))

    def latest(self, name: str) -> tuple[metrics_pb2.Metric, dict[str, str]] | None:
        """The most recent export of metric ``name`` and its resource attributes."""
        with self._lock:
            reqs = list(self.requests)
        for req in reversed(reqs):
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name == name:
                            return m, _attrs(rm.resource.attributes)
        return None

    def points(self, name: str) -> list[tuple[metrics_pb2.Metric, Any]]:
        """Every point of metric ``name`` in every request received, in arrival order, each with its metric (for
        delta temporality, where the points of all exports add up)."""
        with self._lock:
            reqs = list(self.requests)
        out = []
        for req in reqs:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name == name:
                            data = getattr(m, m.WhichOneof("data"))
                            out.extend((m, p) for p in data.data_points)
        return out

    def names(self) -> set[str]:
        with self._lock:
            return {
                m.name
                for r in self.requests
                for rm in r.resource_metrics
                for sm in rm.scope_metrics
                for m in sm.metrics
            }


class GrpcReceiver(Receiver):
    protocol = "grpc"

    def start(self) -> None:
        receiver = self

        class Servicer(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                if not receiver.received(request):
                    context.abort(grpc.StatusCode.UNAVAILABLE, "refusing (test)")
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Servicer(), self._server)
        assert self._server.add_insecure_port(f"127.0.0.1:{self.port}") == self.port
        self._server.start()

    def stop(self) -> None:
        if getattr(self, "_server", None) is not None:
            self._server.stop(grace=None).wait(5)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class HttpReceiver(Receiver):
    protocol = "http/protobuf"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path != "/v1/metrics" or self.headers["Content-Type"] != "application/x-protobuf":
                    self.send_error(404 if self.path != "/v1/metrics" else 415)
                    return
                if not receiver.received(metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)):
                    self.send_error(503)
                    return
                out = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if getattr(self, "_server", None) is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"  # configure() appends /v1/metrics


def _attrs(kvs: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in kvs}
