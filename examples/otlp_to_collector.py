"""Ship metrics over OTLP to an OpenTelemetry Collector (see collector/otelcol-config.yaml).

    otelcol --config collector/otelcol-config.yaml &          # listens on 4317 (gRPC) and 4318 (HTTP)
    python examples/otlp_to_collector.py --endpoint http://localhost:4317 --protocol grpc
    python examples/otlp_to_collector.py --endpoint http://localhost:4318 --protocol http/protobuf

The same works with no code change through the standard variables:
    OTEL_METRICS_EXPORTER=otlp OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 python your_server.py
"""

from __future__ import annotations

import argparse
import asyncio

import ryot_telemetry
from ryot_telemetry.demo.simulate import SimulatedRouter


async def traffic(router: SimulatedRouter, n: int) -> None:
    for i in range(n):
        params = {
            "model": "llama-3.1-8b-instruct",
            "messages": [{"role": "user", "content": f"q{i}"}],
            "stream": i % 2 == 0,
        }
        try:
            result = await router.openai_chat_completion(params)
            if params["stream"]:
                async for _ in result:
                    pass
        except Exception:
            pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", default="http://localhost:4317")
    parser.add_argument("--protocol", default="grpc", choices=["grpc", "http/protobuf"])
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    tel = ryot_telemetry.configure(
        exporters="otlp", otlp_endpoint=args.endpoint, otlp_protocol=args.protocol, export_interval_ms=5000
    )
    router = tel.instrument_router(SimulatedRouter(speed=0.05))
    asyncio.run(traffic(router, args.requests))
    tel.shutdown()  # flushes the last export before exiting
    print(f"sent metrics for {args.requests} requests to {args.endpoint} ({args.protocol})")


if __name__ == "__main__":
    main()
