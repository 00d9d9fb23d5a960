"""The listener against slow and greedy clients (issue 24): a slowloris connection and an idle
keep-alive connection are closed after the idle timeout, a request head past the size or count
limit is refused, and one address cannot hold more connections than its limit. Raw sockets, as
such clients use."""
import socket
import time
import urllib.parse

import pytest

LIMITS = {"idle_timeout_seconds": 2, "max_header_bytes": 8192, "max_header_count": 32, "max_connections_per_address": 6}


@pytest.fixture
def g(fresh_gateway):
    return fresh_gateway(config_extra={"listener": LIMITS})


def connect(g):
    u = urllib.parse.urlparse(g.url)
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    return s


def closed_within(s, seconds):
    """Whether the server closes `s` within `seconds` (reading and dropping what it sends)."""
    deadline = time.time() + seconds
    s.settimeout(0.2)
    while time.time() < deadline:
        try:
            if s.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True
    return False


def get(s, path="/healthz", extra=b""):
    """Sends a keep-alive GET on `s` and returns its status line."""
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: keyward\r\n" + extra + b"\r\n")
    s.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    while len(rest) < length:
        rest += s.recv(65536)
    return head.split(b"\r\n")[0].decode()


def test_a_slowloris_connection_is_closed_after_the_idle_timeout(g):
    s = connect(g)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: keyward\r\n")
    started = time.time()
    closed = False
    for i in range(40):  # a header line every quarter second: never a complete head
        try:
            s.sendall(b"x-trickle-%d: y\r\n" % i)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if closed_within(s, 0.25):
            closed = True
            break
    assert closed, "a client trickling its headers for 10 s kept its connection"
    assert 1.5 <= time.time() - started < 6
    assert get(connect(g)) == "HTTP/1.1 200 OK"


def test_an_idle_keep_alive_connection_is_closed(g):
    s = connect(g)
    assert get(s) == "HTTP/1.1 200 OK"
    started = time.time()
    assert closed_within(s, 6)
    assert 1.5 <= time.time() - started < 6


def test_head_is_answered_on_health_documents_and_the_console_without_a_body(g):
    """HEAD (RFC 9110; health checks and monitors send it) on the health, document and console
    routes gets the GET's status and headers, its length included, and no body: the next request on
    the same keep-alive connection is read from a clean start."""
    s = connect(g)
    s.settimeout(10)

    def exchange(method, path):
        s.sendall(method + b" " + path.encode() + b" HTTP/1.1\r\nHost: keyward\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, f"closed after {method} {path}"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        if method == b"GET":
            while len(rest) < int(fields[b"content-length"]):
                rest += s.recv(65536)
        return lines[0].decode(), fields, rest

    for path in ["/healthz", "/readyz", "/metrics", "/admin/v1/openapi.json", "/console/", "/console/app.js"]:
        status, fields, body = exchange(b"GET", path)
        assert status == "HTTP/1.1 200 OK" and body, (path, status)
        head_status, head_fields, rest = exchange(b"HEAD", path)
        assert head_status == status, (path, head_status)
        assert rest == b"", f"HEAD {path} sent a body"
        # The same length as the GET's body (never a length of 0 for a body that has bytes).
        if path != "/metrics":  # its counters moved with the GET
            assert head_fields[b"content-length"] == fields[b"content-length"] == str(len(body)).encode(), path
        assert head_fields[b"content-type"] == fields[b"content-type"], path
        if path.startswith("/console/"):
            assert b"content-security-policy" in head_fields
    assert get(s) == "HTTP/1.1 200 OK"


@pytest.mark.parametrize("extra", [b"x-big: " + b"a" * 16384 + b"\r\n", b"".join(b"x-h%d: v\r\n" % i for i in range(64))],
                         ids=["too-large", "too-many"])
def test_a_request_head_past_the_limits_is_refused(g, extra):
    s = connect(g)
    status = get(s, extra=extra)
    assert status == "HTTP/1.1 400 Bad Request", status
    assert closed_within(s, 3)
    assert get(connect(g), extra=b"x-fine: " + b"a" * 1024 + b"\r\n") == "HTTP/1.1 200 OK"


def test_one_address_holds_at_most_its_connections(g):
    held = [connect(g) for _ in range(LIMITS["max_connections_per_address"])]
    for s in held:
        assert get(s) == "HTTP/1.1 200 OK"
    extra = connect(g)  # accepted by the kernel, closed by the gateway at once
    assert closed_within(extra, 3)
    held.pop().close()
    deadline = time.time() + 10
    refused = 1  # the extra connection; each poll that comes before the freed slot is refused too
    while True:  # the server counts the closed connection out when it sees it end
        s = connect(g)
        try:
            if get(s, "/metrics") == "HTTP/1.1 200 OK":
                break
        except OSError:
            pass
        refused += 1
        s.close()
        assert time.time() < deadline, "a freed slot was not given back"
        time.sleep(0.1)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: keyward\r\nConnection: close\r\n\r\n")
    s.settimeout(10)
    text = b""
    while chunk := s.recv(65536):
        text += chunk
    assert f"keyward_connections_refused_total {refused}\n".encode() in text
    for s in held:
        s.close()
