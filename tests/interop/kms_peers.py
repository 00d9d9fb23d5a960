"""Peers for the AWS KMS tests: a moto server (the real KMS API implementation we test against) and,
in front of it, a small fault-injecting proxy of our own. The proxy exists only for what moto cannot
do: moto does not enforce key states on Decrypt/Encrypt, throttle, or hang, so the proxy answers
those cases with AWS's documented error shapes and forwards everything else to moto unchanged."""
import http.client
import http.server
import json
import os
import socket
import struct
import subprocess
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class Moto:
    def __init__(self):
        self.port = free_port()
        self.process = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


class FaultProxy:
    """Forwards to moto; `faults` maps an operation to a list of canned answers used one per request
    (status, AWS error type, message), or to a fault for every request: "hang" (accept and never
    answer), "reset" (a TCP reset instead of an answer), "drop" (close without answering),
    "garbage" (a 200 whose body is not JSON), ("delay", seconds) (forward after a pause)."""

    def __init__(self, upstream_port):
        self.faults = {}
        self.calls = []
        self.connections = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                proxy.connections += 1

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                op = self.headers.get("X-Amz-Target", "").split(".")[-1]
                proxy.calls.append(op)
                queue = proxy.faults.get(op)
                if queue == "hang":
                    time.sleep(30)
                    return
                if queue == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if queue == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if queue == "garbage":
                    payload = b"\x00\xffnot json at all" * 64
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if isinstance(queue, tuple) and queue[0] == "delay":
                    time.sleep(queue[1])
                    queue = None
                if queue:
                    status, kind, message = queue.pop(0)
                    payload = json.dumps({"__type": kind, "message": message}).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request("POST", self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                self.send_header("Content-Type", response.getheader("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self):
        self.faults.clear()
        self.calls.clear()
        self.connections = 0

    def stop(self):
        self.server.shutdown()
