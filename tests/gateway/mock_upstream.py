"""A mock model provider for the gateway tests: OpenAI-compatible and Anthropic endpoints.

Written here because no real provider can run in the test sandbox; the clients (the official
`openai` and `anthropic` SDKs) and the gateway are the real things under test. It checks the
provider API key the gateway sends, counts every request it receives (so tests can assert that
nothing reached it), and has models that misbehave on purpose:

  mock-429 -> 429 with retry-after, mock-500 -> 500, mock-slow -> answers after 3 s,
  mock-redirect -> 307 elsewhere, mock-drip -> streams slowly (0.4 s between chunks), mock-tools -> answers with a tool call,
  mock-cut -> resets the connection mid-answer (streamed or not), mock-stall -> stops sending mid-answer for 30 s,
  mock-huge-error -> 500 with a 10 MiB error body; claude-cut and resp-cut -> reset a streamed
  Messages or Responses answer midway; claude-cached -> usage with prompt-cache token counts.

Its Responses API (`/v1/responses`) is stateless, as Keyward calls it: it answers from the input it
is given (`resp-*` models; `resp-tools` calls a function when given tools, `resp-reason` adds an
encrypted reasoning item when asked to include it) and refuses `previous_response_id`, which only
a provider that stores conversations could honour.
"""
import json
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    def __init__(self, api_keys):
        self.api_keys = set(api_keys)
        self.lock = threading.Lock()
        self.requests = []  # (path, auth header, body)
        self.flaky = set()


def last_user_text(body):
    return last_input_text(body.get("messages", []))


def last_input_text(items):
    for item in reversed(items):
        if item.get("role") == "user":
            c = item.get("content")
            if isinstance(c, str):
                return c
            return " ".join(p.get("text", "") for p in c or [] if isinstance(p, dict))
    return ""


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def send_json(self, status, obj, headers=()):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def start_sse(self):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()

        def sse(self, payload, event=None):
            text = (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"
            data = text.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def end_sse(self):
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def do_GET(self):
            if self.path == "/_requests":
                with state.lock:
                    return self.send_json(200, {"count": len(state.requests),
                                                "paths": [r[0] for r in state.requests]})
            if self.path == "/v1/models":
                return self.send_json(200, {"object": "list", "data": [
                    {"id": "mock-1", "object": "model", "created": 0, "owned_by": "mock"},
                    {"id": "mock-2", "object": "model", "created": 0, "owned_by": "mock"}]})
            self.send_json(404, {"error": {"message": "no such path", "type": "invalid_request_error"}})

        def do_POST(self):
            length = int(self.headers.get("content-length", 0))
            raw = self.rfile.read(length)
            if self.path == "/_reset":
                with state.lock:
                    state.requests.clear()
                return self.send_json(200, {})
            auth = self.headers.get("authorization") or self.headers.get("x-api-key") or ""
            with state.lock:
                state.requests.append((self.path, auth, raw))
            key = auth[len("Bearer "):] if auth.startswith("Bearer ") else auth
            if key not in state.api_keys:
                return self.send_json(401, {"error": {"message": "bad provider key", "type": "invalid_request_error"}})
            body = json.loads(raw)
            model = body.get("model", "")
            if model == "mock-429":
                return self.send_json(429, {"error": {"message": "slow down", "type": "rate_limit_error",
                                                      "code": "rate_limit_exceeded"}}, [("retry-after", "7")])
            if model == "mock-huge-error":
                return self.send_json(500, {"error": {"message": "x" * (10 << 20), "type": "server_error"}})
            if model == "mock-500":
                return self.send_json(500, {"error": {"message": "provider broke", "type": "server_error"}})
            if model == "mock-redirect":
                self.send_response(307)
                self.send_header("location", f"http://127.0.0.1:{self.server.server_address[1]}/stolen")
                self.send_header("content-length", "0")
                self.end_headers()
                return
            if model == "mock-slow":
                time.sleep(3)
            if model == "mock-lag":  # longer than a batch's lease in the tests (not behind slowpoke's 1 s time-out)
                time.sleep(2.5)
            if model == "mock-tick":  # a model that takes a moment (batches in flight)
                time.sleep(0.05)
            if model == "mock-flaky":  # each distinct question fails once (503), then is answered
                question = last_user_text(body)
                with state.lock:
                    first = question not in state.flaky
                    state.flaky.add(question)
                if first:
                    return self.send_json(503, {"error": {"message": "overloaded", "type": "server_error"}})
            if self.path == "/v1/chat/completions":
                return self.chat(body, model)
            if self.path == "/v1/embeddings":
                inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                return self.send_json(200, {"object": "list", "model": model, "data": [
                    {"object": "embedding", "index": i, "embedding": [0.25, -0.5, float(len(t))]}
                    for i, t in enumerate(inputs)], "usage": {"prompt_tokens": 2, "total_tokens": 2}})
            if self.path == "/v1/messages":
                return self.messages(body, model)
            if self.path == "/v1/responses":
                return self.responses_api(body, model)
            self.send_json(404, {"error": {"message": "no such path", "type": "invalid_request_error"}})

        def cut(self):
            """Ends the connection with a reset (RST), as a crashed provider or a middlebox does."""
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

        def chat(self, body, model):
            text = "echo: " + last_user_text(body)
            if model == "mock-cut" and not body.get("stream"):
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "1000")
                self.end_headers()
                self.wfile.write(b'{"id": "upstream-id", "object": "chat.comp')
                return self.cut()
            last = (body.get("messages") or [{}])[-1]
            if last.get("role") == "tool":
                text = "tool said: " + str(last.get("content"))
            elif model == "mock-tools":
                message = {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "lookup", "arguments": json.dumps({"q": last_user_text(body)})}}]}
                return self.send_json(200, {"id": "upstream-id", "object": "chat.completion", "created": 1,
                                            "model": model, "choices": [{"index": 0, "message": message,
                                                                         "finish_reason": "tool_calls"}],
                                            "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}})
            if not body.get("stream"):
                return self.send_json(200, {
                    "id": "upstream-id", "object": "chat.completion", "created": 1, "model": model,
                    "system_fingerprint": "fp_mock",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "logprobs": None, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}})
            self.start_sse()
            words = text.split(" ")
            base = {"id": "upstream-id", "object": "chat.completion.chunk", "created": 1, "model": model}
            self.sse(json.dumps({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                      "finish_reason": None}]}))
            for i, w in enumerate(words):
                if model == "mock-drip":
                    time.sleep(0.4)
                if i == 1 and model == "mock-cut":
                    return self.cut()
                if i == 1 and model == "mock-stall":
                    time.sleep(30)
                    return self.cut()
                piece = w if i == 0 else " " + w
                self.sse(json.dumps({**base, "choices": [{"index": 0, "delta": {"content": piece},
                                                          "finish_reason": None}]}))
            self.sse(json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
            if (body.get("stream_options") or {}).get("include_usage"):
                self.sse(json.dumps({**base, "choices": [],
                                     "usage": {"prompt_tokens": 4, "completion_tokens": len(words),
                                               "total_tokens": 4 + len(words)}}))
            self.sse("[DONE]")
            self.end_sse()

        def responses_api(self, body, model):
            if body.get("previous_response_id") or body.get("conversation"):
                return self.send_json(400, {"error": {"message": "this provider keeps no state", "type": "invalid_request_error"}})
            items = body.get("input")
            items = [{"role": "user", "content": items}] if isinstance(items, str) else items
            n = len(items)
            output = []
            if model == "resp-reason" and "reasoning.encrypted_content" in (body.get("include") or []):
                output.append({"type": "reasoning", "id": f"rs_{n}", "summary": [], "encrypted_content": f"opaque-{n}"})
            last = items[-1] if items else {}
            text = "echo: " + last_input_text(items)
            if last.get("type") == "function_call_output":
                text = "tool said: " + str(last.get("output"))
            elif model == "resp-tools" and body.get("tools"):
                output.append({"type": "function_call", "id": f"fc_{n}", "call_id": f"call_{n}", "name": "lookup",
                               "arguments": json.dumps({"q": last_input_text(items)}), "status": "completed"})
                text = None
            message = None
            if text is not None:
                message = {"type": "message", "id": f"msg_up{n}", "status": "completed", "role": "assistant",
                           "content": [{"type": "output_text", "text": text, "annotations": []}]}
                output.append(message)
            response = {"id": "resp_upstream", "object": "response", "created_at": 1, "status": "completed",
                        "model": model, "output": output, "parallel_tool_calls": True, "tool_choice": "auto",
                        "tools": body.get("tools") or [], "store": body.get("store"), "error": None,
                        "incomplete_details": None, "instructions": body.get("instructions"), "metadata": {},
                        "temperature": 1.0, "top_p": 1.0, "text": {"format": {"type": "text"}},
                        "usage": {"input_tokens": 3 * n, "output_tokens": 5, "total_tokens": 3 * n + 5,
                                  "input_tokens_details": {"cached_tokens": 0},
                                  "output_tokens_details": {"reasoning_tokens": 0}}}
            if not body.get("stream"):
                return self.send_json(200, response)
            self.start_sse()
            seq = iter(range(1000))
            def event(kind, **fields):
                self.sse(json.dumps({"type": kind, "sequence_number": next(seq), **fields}), kind)
            begun = {**response, "status": "in_progress", "output": [], "usage": None}
            event("response.created", response=begun)
            event("response.in_progress", response=begun)
            for i, item in enumerate(output):
                if item is not message:
                    event("response.output_item.added", output_index=i, item=item)
                    event("response.output_item.done", output_index=i, item=item)
                    continue
                event("response.output_item.added", output_index=i, item={**item, "status": "in_progress", "content": []})
                part = {"type": "output_text", "text": "", "annotations": []}
                event("response.content_part.added", output_index=i, item_id=item["id"], content_index=0, part=part)
                for j, w in enumerate(text.split(" ")):
                    if j == 1 and model == "resp-cut":
                        return self.cut()
                    event("response.output_text.delta", output_index=i, item_id=item["id"], content_index=0,
                          delta=w if j == 0 else " " + w, logprobs=[])
                event("response.output_text.done", output_index=i, item_id=item["id"], content_index=0, text=text, logprobs=[])
                event("response.content_part.done", output_index=i, item_id=item["id"], content_index=0,
                      part={**part, "text": text})
                event("response.output_item.done", output_index=i, item=item)
            event("response.completed", response=response)
            self.end_sse()

        def messages(self, body, model):
            text = "echo: " + last_user_text(body)
            content = [{"type": "text", "text": text}]
            last = (body.get("messages") or [{}])[-1]
            results = [b for b in last.get("content") or [] if isinstance(b, dict) and b.get("type") == "tool_result"]
            if results:
                content = [{"type": "text", "text": "tool said: " + str(results[-1].get("content"))}]
            elif model == "claude-tools" and body.get("tools"):
                content = [{"type": "tool_use", "id": "toolu_1", "name": body["tools"][0]["name"],
                            "input": {"q": last_user_text(body)}}]
            msg = {"id": "msg_upstream", "type": "message", "role": "assistant", "model": model,
                   "content": content, "stop_reason": "end_turn",
                   "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 7}}
            if model == "claude-cached":  # a prompt read from Anthropic's cache: counted apart from input_tokens
                msg["usage"] |= {"cache_read_input_tokens": 40, "cache_creation_input_tokens": 8}
            if not body.get("stream"):
                return self.send_json(200, msg)
            self.start_sse()
            start = {**msg, "content": [], "stop_reason": None, "usage": {"input_tokens": 5, "output_tokens": 0}}
            self.sse(json.dumps({"type": "message_start", "message": start}), "message_start")
            self.sse(json.dumps({"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}), "content_block_start")
            for i, w in enumerate(text.split(" ")):
                if i == 1 and model == "claude-cut":
                    return self.cut()
                piece = w if i == 0 else " " + w
                self.sse(json.dumps({"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": piece}}), "content_block_delta")
            self.sse(json.dumps({"type": "content_block_stop", "index": 0}), "content_block_stop")
            self.sse(json.dumps({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                 "usage": {"output_tokens": 7}}), "message_delta")
            self.sse(json.dumps({"type": "message_stop"}), "message_stop")
            self.end_sse()

    return Handler


def serve(port, api_keys):
    state = State(api_keys)
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(state))
    server.daemon_threads = True
    return server, state


if __name__ == "__main__":
    server, _ = serve(int(sys.argv[1]), sys.argv[2:])
    server.serve_forever()
