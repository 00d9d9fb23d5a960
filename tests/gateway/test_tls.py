"""The listener over TLS (issue 24): HTTPS with a test CA made by the openssl tool, TLS 1.2 or later
only, the certificate reloaded on SIGHUP without dropping an open connection, client certificates
required on every connection or on admin routes only, and HTTP/2 beside HTTP/1.1 as the client
chooses by ALPN. Peers: curl (with nghttp2), `openssl s_client`, Python's ssl module, httpx over
the h2 library, and the official openai SDK."""
import asyncio
import http.client
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.parse

import socket

import h2.config
import h2.connection
import h2.events
import httpx
import pytest


def openssl(*args, cwd):
    out = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=cwd)
    assert out.returncode == 0, out.stderr


@pytest.fixture
def pki(tmp_path):
    """A CA; two server certificates for 127.0.0.1 (the second for the reload); a client CA and a client certificate."""
    d = tmp_path / "pki"
    d.mkdir()
    for ca in ("ca", "client-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                "-subj", f"/CN=keyward test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, ca, ext in (("server", "ca", True), ("server2", "ca", True), ("client", "client-ca", False)):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN=keyward-{name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial", "-days", "2",
                "-out", f"{name}.pem", *(["-extfile", "san.ext"] if ext else []), cwd=d)
    return d


def tls_gateway(fresh_gateway, pki, **tls):
    live = pki / "live"
    live.mkdir(exist_ok=True)
    for f in ("server.pem", "server.key"):
        (live / f).write_bytes((pki / f).read_bytes())
    g = fresh_gateway(config_extra={"tls": {"cert_file": str(live / "server.pem"), "key_file": str(live / "server.key"), **tls}})
    assert g.url.startswith("https://"), g.url
    return g


def client(pki, cert=None, http2=False):
    """An httpx client that trusts the test CA, presenting `cert` (certificate, key) if given, and
    offering HTTP/2 by ALPN (then only HTTP/2: httpx offers h2 alone) if `http2`."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(*cert)
    return httpx.Client(verify=ctx, http2=http2, http1=not http2, timeout=30)


def admin(g, pki, method, path, body=None, cert=None, http2=False):
    with client(pki, cert, http2) as c:
        r = c.request(method, g.url + path, json=body, headers={"authorization": f"Bearer {g.admin_token}"})
        assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        return r.status_code, r.json()


def peer_name(g, pki):
    u = urllib.parse.urlparse(g.url)
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=10)
    conn.connect()
    subject = dict(x[0] for x in conn.sock.getpeercert()["subject"])
    conn.close()
    return subject["commonName"]


def test_https_tls12_and_later_and_a_reload_on_sighup_that_drops_nothing(fresh_gateway, pki):
    g = tls_gateway(fresh_gateway, pki)
    u = urllib.parse.urlparse(g.url)
    out = subprocess.run(["curl", "-sS", "--cacert", str(pki / "ca.pem"), "-o", "/dev/null", "-w", "%{http_code}", g.url + "/healthz"],
                         capture_output=True, text=True)
    assert out.stdout == "200", out.stderr
    assert subprocess.run(["curl", "-sS", "-o", "/dev/null", f"http://127.0.0.1:{u.port}/healthz"], capture_output=True).returncode != 0
    # TLS 1.2 and 1.3 are spoken; 1.1 is not.
    for flag, ok in (("-tls1_3", True), ("-tls1_2", True), ("-tls1_1", False)):
        s = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{u.port}", flag, "-CAfile", str(pki / "ca.pem"),
                            "-cipher", "DEFAULT:@SECLEVEL=0"], input="", capture_output=True, text=True, timeout=20)
        assert ("no peer certificate available" not in s.stdout) == ok, (flag, s.stdout[-800:], s.stderr[-800:])
        assert not ok or "Verify return code: 0 (ok)" in s.stdout
    # The official SDK, through the test CA.
    status, body = admin(g, pki, "POST", "/admin/v1/tenants", {"name": "secure"})
    assert status == 201, body
    status, token = admin(g, pki, "POST", "/admin/v1/tokens", {"tenant": "secure"})
    import openai
    c = openai.OpenAI(base_url=g.url + "/v1", api_key=token["token"], max_retries=0,
                      http_client=client(pki))
    assert c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "over tls"}]).choices[0].message.content == "echo: over tls"

    # SIGHUP with new files: an open connection goes on, new connections get the new certificate.
    assert peer_name(g, pki) == "keyward-server"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    kept = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=10)
    kept.request("GET", "/healthz")
    assert kept.getresponse().read() is not None
    socket_before = kept.sock
    for f in ("pem", "key"):
        (pki / "live" / f"server.{f}").write_bytes((pki / f"server2.{f}").read_bytes())
    g.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while peer_name(g, pki) != "keyward-server2":
        assert time.time() < deadline, "the new certificate was not taken up"
        time.sleep(0.2)
    kept.request("GET", "/healthz")
    r = kept.getresponse()
    assert r.status == 200 and json.loads(r.read())
    assert kept.sock is socket_before, "the connection was opened again"
    kept.close()
    # A broken file on SIGHUP: the server keeps the certificate it has.
    (pki / "live" / "server.pem").write_text("not a certificate")
    g.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert g.proc.poll() is None and peer_name(g, pki) == "keyward-server2"


def test_client_certificates_on_every_connection(fresh_gateway, pki):
    g = tls_gateway(fresh_gateway, pki, client_ca_file=str(pki / "client-ca.pem"))
    base = ["curl", "-sS", "--cacert", str(pki / "ca.pem"), "-o", "/dev/null", "-w", "%{http_code}", g.url + "/healthz"]
    assert subprocess.run(base, capture_output=True, text=True).returncode != 0  # no certificate: no handshake
    # A certificate of another CA (the server's own) is refused as well.
    assert subprocess.run(base + ["--cert", str(pki / "server.pem"), "--key", str(pki / "server.key")], capture_output=True).returncode != 0
    out = subprocess.run(base + ["--cert", str(pki / "client.pem"), "--key", str(pki / "client.key")], capture_output=True, text=True)
    assert out.stdout == "200", out.stderr


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_client_certificates_on_admin_routes_only(fresh_gateway, pki, http2):
    # Over HTTP/2 the request is a stream whose connection (its parent) holds the certificate.
    g = tls_gateway(fresh_gateway, pki, client_ca_file=str(pki / "client-ca.pem"), client_certificates="admin")
    certificate = (str(pki / "client.pem"), str(pki / "client.key"))
    status, body = admin(g, pki, "POST", "/admin/v1/tenants", {"name": "nocert"}, http2=http2)
    assert status == 403 and body["error"]["code"] == "client_certificate_required", body
    status, body = admin(g, pki, "POST", "/admin/v1/tenants", {"name": "withcert"}, cert=certificate, http2=http2)
    assert status == 201, body
    status, token = admin(g, pki, "POST", "/admin/v1/tokens", {"tenant": "withcert"}, cert=certificate, http2=http2)
    assert status == 201, token
    # App routes need no client certificate.
    import openai
    c = openai.OpenAI(base_url=g.url + "/v1", api_key=token["token"], max_retries=0,
                      http_client=client(pki, http2=http2))
    assert c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "app"}]).choices[0].message.content == "echo: app"
    # The console's first calls (who am I, the dashboard) need none either, for an app token or
    # an admin one; every other admin route still does.
    with client(pki, None, http2) as h:
        for path in ["/admin/v1/session", "/admin/v1/dashboard"]:
            for bearer in [token["token"], g.admin_token]:
                r = h.get(g.url + path, headers={"authorization": f"Bearer {bearer}"})
                assert r.status_code == 200, (path, r.text)
        assert h.get(g.url + "/admin/v1/session", headers={"authorization": f"Bearer {token['token']}"}).json()["role"] == "app"
        r = h.get(g.url + "/admin/v1/tenants", headers={"authorization": f"Bearer {g.admin_token}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "client_certificate_required", r.text


def test_http2_by_alpn_beside_http1(fresh_gateway, pki):
    g = tls_gateway(fresh_gateway, pki)
    curl = ["curl", "-sS", "--cacert", str(pki / "ca.pem"), "-o", "/dev/null", "-w", "%{http_version} %{http_code}"]
    assert subprocess.run(curl + ["--http2", g.url + "/healthz"], capture_output=True, text=True).stdout == "2 200"
    assert subprocess.run(curl + ["--http1.1", g.url + "/healthz"], capture_output=True, text=True).stdout == "1.1 200"
    status, _ = admin(g, pki, "POST", "/admin/v1/tenants", {"name": "h2"}, http2=True)
    assert status == 201
    status, token = admin(g, pki, "POST", "/admin/v1/tokens", {"tenant": "h2"}, http2=True)
    import openai
    h2client = client(pki, http2=True)
    c = openai.OpenAI(base_url=g.url + "/v1", api_key=token["token"], max_retries=0, http_client=h2client)
    # Answers whole and streamed, and many streams at once on the one connection.
    raw = c.chat.completions.with_raw_response.create(model="mock-1", messages=[{"role": "user", "content": "over h2"}])
    assert raw.http_response.http_version == "HTTP/2"
    assert raw.parse().choices[0].message.content == "echo: over h2"
    stream = c.chat.completions.create(model="mock-1", stream=True, messages=[{"role": "user", "content": "streamed h2"}])
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == "echo: streamed h2"
    # With asyncio, not threads: httpcore's sync HTTP/2 connection takes a stream id and sends its
    # HEADERS without holding a lock between the two, so two threads can open streams out of order
    # (7 after 9), which a server must answer with a connection error (RFC 9113, 5.1.1).
    async def many():
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        async with httpx.AsyncClient(verify=ctx, http2=True, http1=False, timeout=30) as h:
            ac = openai.AsyncOpenAI(base_url=g.url + "/v1", api_key=token["token"], max_retries=0, http_client=h)
            raws = await asyncio.gather(*(ac.chat.completions.with_raw_response.create(
                model="mock-1", messages=[{"role": "user", "content": f"n{i}"}]) for i in range(24)))
            return {r.http_response.http_version for r in raws}, [r.parse().choices[0].message.content for r in raws]
    versions, answers = asyncio.run(many())
    assert versions == {"HTTP/2"}
    assert answers == [f"echo: n{i}" for i in range(24)]
    # A file in and out (the upload's connection-level read size is not touched on a stream).
    data = os.urandom(3 << 20)
    f = c.files.create(file=("h2.bin", data), purpose="user_data")
    assert c.files.content(f.id).read() == data
    # The stored answer is read back over HTTP/2 too.
    stored = c.chat.completions.create(model="mock-1", store=True, messages=[{"role": "user", "content": "kept"}])
    assert c.chat.completions.retrieve(stored.id).choices[0].message.content == "echo: kept"
    # A body past the limit is refused at once, its stream reset, the connection kept.
    started = time.time()
    r = h2client.post(g.url + "/v1/chat/completions", content=b"x" * (8 << 20),
                      headers={"authorization": f"Bearer {token['token']}", "content-type": "application/json"})
    assert r.status_code == 413 and time.time() - started < 10
    assert c.models.list().data
    # The server stops promptly although the client keeps its idle connection (and, reading nothing
    # between requests, never answers the server's PING).
    started = time.time()
    assert g.stop() == 0
    assert time.time() - started < 6  # PING 2 s, TLS close 1 s
    h2client.close()


def h2_connection(g, pki):
    """A TLS socket that negotiated h2, and an h2 client connection whose preface was sent."""
    u = urllib.parse.urlparse(g.url)
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.set_alpn_protocols(["h2"])
    s = ctx.wrap_socket(socket.create_connection((u.hostname, u.port), timeout=10), server_hostname=u.hostname)
    assert s.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    return s, conn


def test_http2_expect_100_continue_gets_an_interim_answer_before_the_body(fresh_gateway, pki):
    # The HTTP/1.1 side is tested in test_files; on HTTP/2 the interim answer is a HEADERS frame of
    # its own (`:status 100`) on the request's stream, then the final one.
    g = tls_gateway(fresh_gateway, pki)
    _, token = admin(g, pki, "POST", "/admin/v1/tenants", {"name": "h2-expect"})
    _, token = admin(g, pki, "POST", "/admin/v1/tokens", {"tenant": "h2-expect"})
    body = (b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--b\r\n'
            b'Content-Disposition: form-data; name="file"; filename="x"\r\n\r\nhello h2\r\n--b--\r\n')
    s, conn = h2_connection(g, pki)
    conn.send_headers(1, [(":method", "POST"), (":path", "/v1/files"), (":scheme", "https"), (":authority", "x"),
                          ("authorization", f"Bearer {token['token']}"), ("content-type", "multipart/form-data; boundary=b"),
                          ("content-length", str(len(body))), ("expect", "100-continue")])
    s.sendall(conn.data_to_send())
    seen, answer = [], b""
    while not any(isinstance(e, h2.events.StreamEnded) for e in seen):
        data = s.recv(65536)
        assert data, seen
        for e in conn.receive_data(data):
            seen.append(e)
            if isinstance(e, h2.events.InformationalResponseReceived):
                conn.send_data(1, body, end_stream=True)  # the body only now
            if isinstance(e, h2.events.DataReceived):
                answer += e.data
                conn.acknowledge_received_data(e.flow_controlled_length, 1)
        s.sendall(conn.data_to_send())
    heads = [dict(e.headers)[":status"] for e in seen
             if isinstance(e, (h2.events.InformationalResponseReceived, h2.events.ResponseReceived))]
    assert heads == ["100", "200"], seen
    assert json.loads(answer)["bytes"] == len(b"hello h2")
    s.close()


def h2_connection_when_free(g, pki, seconds=10):
    """h2_connection, once the server has counted closed connections of this address out."""
    deadline = time.time() + seconds
    while True:
        try:
            return h2_connection(g, pki)
        except (ssl.SSLError, ConnectionResetError):
            assert time.time() < deadline, "the address's connections were not counted out"
            time.sleep(0.1)


def h2_events_until_closed(s, conn, seconds):
    """The h2 events the server sends until it closes the connection; fails past `seconds`."""
    s.settimeout(seconds)
    events = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            data = s.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return events
        if not data:
            return events
        if any(isinstance(e, h2.events.ConnectionTerminated) for e in events):
            continue  # after GOAWAY the server may still PING, which the h2 library refuses to read
        events += conn.receive_data(data)
        s.sendall(conn.data_to_send())
    raise AssertionError(f"connection still open after {seconds} s: {events}")


def test_http2_connections_keep_the_listener_limits(fresh_gateway, pki):
    g = tls_gateway(fresh_gateway, pki)
    g.stop()
    with open(g.config) as f:
        config = json.load(f)
    config["listener"] = {"idle_timeout_seconds": 3, "max_connections_per_address": 3}
    with open(g.config, "w") as f:
        json.dump(config, f)
    g.start()
    u = urllib.parse.urlparse(g.url)
    # Connections past the address's limit are closed before their TLS handshake.
    held = [h2_connection(g, pki) for _ in range(3)]
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
        ctx.wrap_socket(socket.create_connection((u.hostname, u.port), timeout=10), server_hostname=u.hostname)
    for s, _ in held:
        s.close()
    # An HTTP/2 connection without a stream is closed when idle: GOAWAY and a PING, then the close
    # once the PING goes unanswered (this client reads nothing after GOAWAY, as a dead one).
    s, conn = h2_connection_when_free(g, pki)
    started = time.time()
    events = h2_events_until_closed(s, conn, 15)
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events), events
    assert time.time() - started < 10
    # An answer that is not the server's PING's own (wrong data) does not keep it open either.
    s, conn = h2_connection_when_free(g, pki)
    s.settimeout(15)
    data = b""
    while b"\x07\x00\x00\x00\x00\x00" not in data:  # a GOAWAY frame header (type 7, stream 0)
        chunk = s.recv(65536)
        assert chunk, "closed before GOAWAY"
        data += chunk
    s.sendall(b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + b"notmine!")  # PING, ACK flag, stream 0
    started = time.time()
    while s.recv(65536):
        assert time.time() - started < 10, "an answer with other data kept the connection open"
    # A TCP connection that never begins its TLS handshake is closed after the idle timeout.
    bare = socket.create_connection((u.hostname, u.port), timeout=15)
    started = time.time()
    assert bare.recv(1) == b"" and time.time() - started < 10
    bare.close()
    # A header block past swift-nio-http2's 16 KiB is refused; the connection does not serve it.
    s, conn = h2_connection_when_free(g, pki)
    conn.send_headers(1, [(":method", "GET"), (":path", "/healthz"), (":scheme", "https"), (":authority", "keyward"),
                          ("x-big", "a" * (20 << 10))], end_stream=True)
    s.sendall(conn.data_to_send())
    events = h2_events_until_closed(s, conn, 15)
    assert not any(isinstance(e, h2.events.ResponseReceived) for e in events), events
    assert any(isinstance(e, (h2.events.ConnectionTerminated, h2.events.StreamReset)) for e in events), events


def test_an_http2_download_in_flight_when_the_server_stops_is_whole(fresh_gateway, pki, tmp_path):
    # curl (nghttp2) reads at 4 MiB/s, so the stop comes mid-answer and the client is slow to read
    # (and to answer the server's PING); httpx and the h2 library treat the stopping server's first
    # GOAWAY (which still lets open streams finish) as the end, so they cannot be the client here.
    g = tls_gateway(fresh_gateway, pki)
    status, _ = admin(g, pki, "POST", "/admin/v1/tenants", {"name": "stopping"})
    status, token = admin(g, pki, "POST", "/admin/v1/tokens", {"tenant": "stopping"})
    import openai
    with client(pki, http2=True) as h2client:
        c = openai.OpenAI(base_url=g.url + "/v1", api_key=token["token"], max_retries=0, http_client=h2client)
        data = os.urandom(16 << 20)
        file_id = c.files.create(file=("big.bin", data), purpose="user_data").id
    out = tmp_path / "download.bin"
    curl = subprocess.Popen(["curl", "-sS", "--http2", "--cacert", str(pki / "ca.pem"), "--limit-rate", "4M",
                             "-H", f"authorization: Bearer {token['token']}", "-o", str(out), "-w", "%{http_version} %{http_code}",
                             f"{g.url}/v1/files/{file_id}/content"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while not out.exists() or out.stat().st_size < (1 << 20):
        assert time.time() < deadline and curl.poll() is None, "the download did not begin"
        time.sleep(0.05)
    g.proc.send_signal(signal.SIGTERM)
    stdout, stderr = curl.communicate(timeout=60)
    assert curl.returncode == 0 and stdout == "2 200", (curl.returncode, stdout, stderr)
    assert out.read_bytes() == data
    assert g.proc.wait(timeout=20) == 0
