"""Traces: `keyward serve` with the standard OTEL_* variables exports its spans over OTLP/HTTP to
a small receiver here, which decodes them with PyPI's `opentelemetry-proto` (the OpenTelemetry
project's own protobuf definitions). The span tree, the trace id carried in from an incoming
`traceparent`, and the absence of any prompt, completion, token or key in any attribute are
checked on what the receiver got. With OTEL_TRACES_EXPORTER=none, nothing is exported."""
import http.server
import threading
import time
import uuid

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


class Receiver:
    """An OTLP/HTTP trace receiver on loopback: POST /v1/traces with a protobuf body."""

    def __init__(self):
        self.spans = []
        self.resources = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    for rs in request.resource_spans:
                        receiver.resources.append(rs.resource)
                        for ss in rs.scope_spans:
                            receiver.spans.extend(ss.spans)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, predicate, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if predicate(list(self.spans)):
                    return list(self.spans)
            time.sleep(0.05)
        with self.lock:
            return list(self.spans)

    def close(self):
        self.server.shutdown()


def attribute_text(span):
    """Every attribute value of a span, and its name, as one string."""
    parts = [span.name]
    for a in span.attributes:
        v = a.value
        parts.append(a.key + "=" + str(getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else ""))
    for e in span.events:
        parts.append(e.name)
        parts += [a.key + "=" + str(a.value) for a in e.attributes]
    return "\n".join(parts)


def traced_gateway(fresh_gateway, receiver, **env):
    """A gateway told of `receiver` through the standard variables (and `env`), exporting every 100 ms."""
    return fresh_gateway(extra_env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **env,
    })


def chat(g, token, content, traceparent):
    status, body, _ = g.request("POST", "/v1/chat/completions", {
        "model": "mock-1", "messages": [{"role": "user", "content": content}],
    }, token=token, headers={"traceparent": traceparent})
    assert status == 200, body
    return body


def test_spans_reach_an_otlp_receiver_in_one_tree_continuing_the_callers_trace(upstream, fresh_gateway):
    receiver = Receiver()
    try:
        g = traced_gateway(fresh_gateway, receiver)
        token = g.new_tenant("traced")
        prompt = "PROMPT-CANARY-" + uuid.uuid4().hex
        trace_id = uuid.uuid4().hex
        parent_id = uuid.uuid4().hex[:16]
        body = chat(g, token, prompt, f"00-{trace_id}-{parent_id}-01")
        # A traceparent that does not parse: the tracer says so in the log, never with the headers.
        chat(g, token, "hello", "00-not-a-trace-id")
        completion = body["choices"][0]["message"]["content"]
        # A query's parameters that Keyward does not read reach no span, whatever their form.
        query_canary = "QUERY-CANARY-" + uuid.uuid4().hex
        status, listed, _ = g.request("GET", f"/v1/files?limit=2&api_key={query_canary}&{query_canary}-bare&order=desc",
                                      token=token)
        assert status == 200, listed

        def complete(spans):
            ours = [s for s in spans if s.trace_id.hex() == trace_id]
            names = {s.name for s in ours}
            return "/v1/chat/completions" in names and "upstream mock" in names and "storage insert" in names \
                and any(n.startswith("keystore ") for n in names) and any(s.name == "/v1/files" for s in spans)

        spans = receiver.wait(complete)
        ours = [s for s in spans if s.trace_id.hex() == trace_id]
        by_name = {s.name: s for s in ours}
        assert complete(spans), sorted(by_name)

        # The request's span continues the caller's trace, under the caller's span.
        root = by_name["/v1/chat/completions"]
        assert root.parent_span_id.hex() == parent_id
        assert root.kind == root.SPAN_KIND_SERVER
        # Every other span of the request hangs below it.
        ids = {s.span_id for s in ours}
        for s in ours:
            if s is root:
                continue
            chain, hops = s, 0
            while chain.parent_span_id != root.span_id and hops < 10:
                parent = next((p for p in ours if p.span_id == chain.parent_span_id), None)
                assert parent is not None, f"{s.name} has a parent outside the request's tree"
                chain, hops = parent, hops + 1
            assert chain.parent_span_id == root.span_id
        assert by_name["upstream mock"].kind == root.SPAN_KIND_CLIENT
        listing = {a.key: a.value.string_value for a in next(s for s in spans if s.name == "/v1/files").attributes}
        assert listing["url.path"] == "/v1/files"
        assert listing["url.query"] == "limit=2&REDACTED&REDACTED&order=desc", listing
        keystore = [s for s in ours if s.name.startswith("keystore ")]
        assert all(s.kind == root.SPAN_KIND_CLIENT for s in keystore)
        assert all(s.end_time_unix_nano >= s.start_time_unix_nano > 0 for s in ours)
        assert ids and len(ids) == len(ours)

        # The service names itself; no attribute anywhere holds a prompt, completion, token or key.
        service = {a.value.string_value for r in receiver.resources for a in r.attributes if a.key == "service.name"}
        assert service == {"keyward"}
        everything = "\n".join(attribute_text(s) for s in spans)
        for secret in [prompt, completion, token, g.admin_token, upstream.api_key, "Bearer", "kw_", query_canary]:
            assert secret not in everything, f"a span carries {secret[:12]}…"
        with open(g.stderr_path, errors="replace") as f:
            log = f.read()
        assert "Failed to extract span context" in log  # where the request's headers used to go
        for secret in [prompt, completion, token, upstream.api_key, "Bearer"]:
            assert secret not in log, f"the log carries {secret[:12]}…"
    finally:
        receiver.close()


def test_a_traces_exporter_of_none_exports_nothing(upstream, fresh_gateway):
    receiver = Receiver()
    try:
        # The collector is named, but OTEL_TRACES_EXPORTER=none turns tracing off (the standard's meaning).
        g = traced_gateway(fresh_gateway, receiver, OTEL_TRACES_EXPORTER="none")
        token = g.new_tenant("untraced")
        chat(g, token, "hello", f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01")
        g.stop()
        assert receiver.spans == []
    finally:
        receiver.close()
