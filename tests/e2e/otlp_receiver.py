"""A test-suite OTLP receiver on loopback: gRPC and HTTP/protobuf, decoded with opentelemetry-proto.

It accepts traces, metrics and logs the way a collector would, records every export request with
the transport it came in on, and turns the spans back into plain values (:class:`WireSpan`) so a
test can rebuild the span tree from exactly what went over the wire.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal, TypeAlias

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

__all__ = [
    "AttributeValue",
    "OTLPReceiver",
    "Received",
    "WireSpan",
    "attribute_value",
    "attributes",
    "wire_spans",
]

Transport = Literal["grpc", "http"]
Signal = Literal["traces", "metrics", "logs"]
AttributeValue: TypeAlias = (
    "str | bool | int | float | bytes | list[AttributeValue] | dict[str, AttributeValue]"
)

_LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Received:
    """One export request, as decoded."""

    transport: Transport
    signal: Signal
    message: Message


@dataclass(frozen=True)
class WireSpan:
    """A span as it travelled: ids in hex, attribute values with their protobuf types kept."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    status_code: int
    status_message: str
    start_ns: int
    end_ns: int
    attributes: dict[str, AttributeValue]
    resource: dict[str, AttributeValue]
    scope_name: str
    events: list[str] = field(default_factory=list)

    @property
    def is_root(self) -> bool:
        return not self.parent_span_id


def attribute_value(value: AnyValue) -> AttributeValue:
    """An OTLP AnyValue as the Python value of the same type (an int_value stays an int)."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return value.bool_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bytes_value":
        return value.bytes_value
    if which == "array_value":
        return [attribute_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    raise AssertionError(f"AnyValue with no value set: {value!r}")


def attributes(pairs: Iterable[KeyValue]) -> dict[str, AttributeValue]:
    result: dict[str, AttributeValue] = {}
    for pair in pairs:
        assert pair.key not in result, f"attribute {pair.key!r} sent twice"
        result[pair.key] = attribute_value(pair.value)
    return result


def wire_spans(resource_spans: Iterable[ResourceSpans]) -> list[WireSpan]:
    """Flatten OTLP ResourceSpans (from an export request or a query API) into WireSpans."""
    spans: list[WireSpan] = []
    for rs in resource_spans:
        resource = attributes(rs.resource.attributes)
        for scope_spans in rs.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    WireSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=span.kind,
                        status_code=span.status.code,
                        status_message=span.status.message,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=attributes(span.attributes),
                        resource=resource,
                        scope_name=scope_spans.scope.name,
                        events=[event.name for event in span.events],
                    )
                )
    return spans


# Request and response types per signal, and the gRPC service that carries each.
_SIGNALS: dict[Signal, tuple[type[Message], type[Message], str]] = {
    "traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
        trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name,
    ),
    "metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
        metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name,
    ),
    "logs": (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
        logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name,
    ),
}
_HTTP_PATHS: dict[str, Signal] = {
    "/v1/traces": "traces",
    "/v1/metrics": "metrics",
    "/v1/logs": "logs",
}


class OTLPReceiver:
    """OTLP/gRPC and OTLP/HTTP (protobuf) on free loopback ports, recording what arrives.

    ::

        with OTLPReceiver() as receiver:
            env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint}
            ...
            receiver.wait_for(lambda r: len(r.spans()) >= 4)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._received: list[Received] = []
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self.grpc_port = 0
        self.http_port = 0

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> OTLPReceiver:
        self._start_grpc()
        self._start_http()
        return self

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait(5)
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._http_thread is not None:
            self._http_thread.join(5)
            self._http_thread = None

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{_LOOPBACK}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://{_LOOPBACK}:{self.http_port}"

    def endpoint(self, protocol: str) -> str:
        """The OTEL_EXPORTER_OTLP_ENDPOINT value for an OTEL_EXPORTER_OTLP_PROTOCOL value."""
        return self.grpc_endpoint if protocol == "grpc" else self.http_endpoint

    # ---- what arrived ----------------------------------------------------------------------

    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def spans(self) -> list[WireSpan]:
        return wire_spans(
            rs
            for r in self.received()
            if isinstance(r.message, trace_service_pb2.ExportTraceServiceRequest)
            for rs in r.message.resource_spans
        )

    def metric_requests(self) -> list[metrics_service_pb2.ExportMetricsServiceRequest]:
        return [
            r.message
            for r in self.received()
            if isinstance(r.message, metrics_service_pb2.ExportMetricsServiceRequest)
        ]

    def wait_for(self, condition: Callable[[OTLPReceiver], bool], timeout: float = 10.0) -> bool:
        """Wait until ``condition(self)`` holds; return whether it did within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:
                self._changed.wait(min(remaining, 0.1))
        return True

    def _record(self, transport: Transport, signal: Signal, message: Message) -> None:
        with self._changed:
            self._received.append(Received(transport, signal, message))
            self._changed.notify_all()

    # ---- gRPC ------------------------------------------------------------------------------

    def _start_grpc(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        for signal, (request_type, response_type, service) in _SIGNALS.items():
            server.add_generic_rpc_handlers(
                (
                    grpc.method_handlers_generic_handler(
                        service,
                        {
                            "Export": grpc.unary_unary_rpc_method_handler(
                                self._grpc_export(signal, response_type),
                                request_deserializer=request_type.FromString,
                                response_serializer=response_type.SerializeToString,
                            )
                        },
                    ),
                )
            )
        self.grpc_port = server.add_insecure_port(f"{_LOOPBACK}:0")
        server.start()
        self._grpc = server

    def _grpc_export(
        self, signal: Signal, response_type: type[Message]
    ) -> Callable[[Message, grpc.ServicerContext], Message]:
        def export(request: Message, context: grpc.ServicerContext) -> Message:
            self._record("grpc", signal, request)
            return response_type()

        return export

    # ---- HTTP ------------------------------------------------------------------------------

    def _start_http(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                signal = _HTTP_PATHS.get(self.path.split("?")[0])
                if signal is None:
                    self._reply(HTTPStatus.NOT_FOUND, b"", "text/plain")
                    return
                if self.headers.get("Content-Type", "").split(";")[0] != "application/x-protobuf":
                    self._reply(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, b"", "text/plain")
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding", "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request_type, response_type, _ = _SIGNALS[signal]
                try:
                    request = request_type.FromString(body)
                except DecodeError:
                    self._reply(HTTPStatus.BAD_REQUEST, b"", "text/plain")
                    return
                receiver._record("http", signal, request)
                self._reply(HTTPStatus.OK, response_type().SerializeToString())

            def _reply(
                self, status: HTTPStatus, body: bytes, content_type: str = "application/x-protobuf"
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: pytest shows failures, not every request."""

        server = ThreadingHTTPServer((_LOOPBACK, 0), Handler)
        server.daemon_threads = True
        self.http_port = server.server_address[1]
        self._http = server
        self._http_thread = threading.Thread(
            target=server.serve_forever, name="otlp-http-receiver", daemon=True
        )
        self._http_thread.start()


SPAN_KIND_CLIENT = Span.SpanKind.SPAN_KIND_CLIENT
SPAN_KIND_INTERNAL = Span.SpanKind.SPAN_KIND_INTERNAL
