"""OTLP trace receivers for tests and benchmarks: real protocol endpoints that decode what arrives.

* :class:`OtlpHttpReceiver` — ``POST /v1/traces`` (OTLP/HTTP, protobuf, optionally gzip), an
  ``http.server`` in a thread; ``GET /stats`` answers ``{"requests": n, "spans": m}``.
* :class:`OtlpGrpcReceiver` — the OTLP/gRPC ``TraceService/Export`` method on a grpcio server.

Both decode ``ExportTraceServiceRequest`` with ``opentelemetry-proto`` (installed with the exporter)
and keep every request. ``python -m tests.integration._otlp --port N`` runs the HTTP receiver as a
process of its own (the tracing benchmark uses it, so decoding does not compete for the GIL of the
process being measured).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import threading
import time
from collections.abc import Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["OtlpGrpcReceiver", "OtlpHttpReceiver", "ReceivedSpan", "attributes_of"]


def attributes_of(values: Any) -> dict[str, Any]:
    """Protobuf ``KeyValue`` list → plain dict (string, int, double and bool values)."""
    result: dict[str, Any] = {}
    for item in values:
        assert isinstance(item, KeyValue)
        kind = item.value.WhichOneof("value")
        result[item.key] = getattr(item.value, kind) if kind else None
    return result


class ReceivedSpan:
    """One received span with its resource attributes."""

    def __init__(self, span: Span, resource: dict[str, Any]) -> None:
        self.span = span
        self.resource = resource

    @property
    def name(self) -> str:
        return str(self.span.name)

    @property
    def trace_id(self) -> str:
        return bytes(self.span.trace_id).hex()

    @property
    def span_id(self) -> str:
        return bytes(self.span.span_id).hex()

    @property
    def parent_span_id(self) -> str:
        return bytes(self.span.parent_span_id).hex()

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes_of(self.span.attributes)


class _Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[ExportTraceServiceRequest] = []
        self.request_count = 0
        self.span_count = 0

    def add(self, request: ExportTraceServiceRequest, *, keep: bool = True) -> None:
        count = sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
        with self.lock:
            if keep:
                self.requests.append(request)
            self.request_count += 1
            self.span_count += count

    def spans(self) -> list[ReceivedSpan]:
        with self.lock:
            requests = list(self.requests)
        return [
            ReceivedSpan(span, attributes_of(rs.resource.attributes))
            for request in requests
            for rs in request.resource_spans
            for scope in rs.scope_spans
            for span in scope.spans
        ]

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], timeout_s: float
    ) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.spans()
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"OTLP receiver: condition not met after {timeout_s} s ({len(spans)} spans)"
                )
            time.sleep(0.02)


class OtlpHttpReceiver:
    """An OTLP/HTTP trace receiver on ``127.0.0.1`` (a free port unless ``port`` is given)."""

    def __init__(self, *, port: int = 0, keep_requests: bool = True) -> None:
        self._store = _Store()
        store = self._store

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                store.add(request, keep=keep_requests)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_GET(self) -> None:
                with store.lock:
                    body = json.dumps({"requests": store.request_count, "spans": store.span_count}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """Base URL (``OTEL_EXPORTER_OTLP_ENDPOINT``); the exporter appends ``/v1/traces``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def span_count(self) -> int:
        return self._store.span_count

    def spans(self) -> list[ReceivedSpan]:
        return self._store.spans()

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], *, timeout_s: float = 10.0
    ) -> list[ReceivedSpan]:
        return self._store.wait_for(predicate, timeout_s)

    def serve_forever(self) -> None:
        """Serve in the calling thread (the receiver as a process of its own)."""
        self._server.serve_forever()

    def start(self) -> OtlpHttpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OtlpHttpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class OtlpGrpcReceiver:
    """An OTLP/gRPC trace receiver (``TraceService/Export``) on ``127.0.0.1`` and a free port."""

    def __init__(self) -> None:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        self._store = _Store()
        store = self._store

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:
                store.add(request)
                return ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[ReceivedSpan]:
        return self._store.spans()

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], *, timeout_s: float = 10.0
    ) -> list[ReceivedSpan]:
        return self._store.wait_for(predicate, timeout_s)

    def __enter__(self) -> OtlpGrpcReceiver:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop(grace=None)


def main() -> None:
    parser = argparse.ArgumentParser(description="OTLP/HTTP trace receiver (counts spans; GET /stats)")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    receiver = OtlpHttpReceiver(port=args.port, keep_requests=False)
    with contextlib.suppress(KeyboardInterrupt):
        receiver.serve_forever()


if __name__ == "__main__":
    main()
