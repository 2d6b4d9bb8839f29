"""A minimal OTLP/HTTP trace receiver for the tests (no collector is installable here).

POST /v1/traces takes an ExportTraceServiceRequest (protobuf, optionally gzip), as every
OTLP/HTTP exporter sends it; GET /spans answers every span received so far as JSON (ids in
hex, times in ns); DELETE /spans forgets them. With KEEP_SPANS=false (a load test) spans are
decoded and counted but not kept. Stdlib only, besides opentelemetry-proto.
"""

import gzip
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

PORT = 4318
KEEP_SPANS = os.environ.get("KEEP_SPANS", "true") == "true"
_spans: list[dict[str, Any]] = []
_received = 0
_lock = threading.Lock()


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(list(value.kvlist_value.values))
    return getattr(value, kind)


def _attributes(pairs: list[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def decode(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = _attributes(list(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "service": resource.get("service.name"),
                        "scope": scope_spans.scope.name,
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex() or None,
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": span.end_time_unix_nano,
                        "attributes": _attributes(list(span.attributes)),
                        "links": [
                            {
                                "trace_id": link.trace_id.hex(),
                                "span_id": link.span_id.hex(),
                                "attributes": _attributes(list(link.attributes)),
                            }
                            for link in span.links
                        ],
                        "status": span.status.code,
                    }
                )
    return spans


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = decode(request)
        global _received
        with _lock:
            _received += len(spans)
            if KEEP_SPANS:
                _spans.extend(spans)
        self._answer(
            200, "application/x-protobuf", ExportTraceServiceResponse().SerializeToString()
        )

    def do_GET(self) -> None:
        with _lock:
            if self.path == "/spans":
                body = json.dumps(_spans).encode()
            elif self.path == "/count":
                body = json.dumps(_received).encode()
            else:
                self.send_error(404)
                return
        self._answer(200, "application/json", body)

    def do_DELETE(self) -> None:
        with _lock:
            _spans.clear()
        self._answer(204, "application/json", b"")

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the test reads spans, not this server's access lines


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
