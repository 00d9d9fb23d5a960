"""The listener over TLS (issue 24): HTTPS with a test CA made by the openssl tool, TLS 1.2 or later
only, the certificate reloaded on SIGHUP without dropping an open connection, and client
certificates required on every connection or on admin routes only. Peers: curl, `openssl
s_client`, Python's ssl module and the official openai SDK."""
import http.client
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.parse

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


def client(pki, cert=None):
    """An httpx client that trusts the test CA, presenting `cert` (certificate, key) if given."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(*cert)
    return httpx.Client(verify=ctx)


def admin(g, pki, method, path, body=None, cert=None):
    with client(pki, cert) as c:
        r = c.request(method, g.url + path, json=body, headers={"authorization": f"Bearer {g.admin_token}"})
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


def test_client_certificates_on_admin_routes_only(fresh_gateway, pki):
    g = tls_gateway(fresh_gateway, pki, client_ca_file=str(pki / "client-ca.pem"), client_certificates="admin")
    certificate = (str(pki / "client.pem"), str(pki / "client.key"))
    status, body = admin(g, pki, "POST", "/admin/v1/tenants", {"name": "nocert"})
    assert status == 403 and body["error"]["code"] == "client_certificate_required", body
    status, body = admin(g, pki, "POST", "/admin/v1/tenants", {"name": "withcert"}, cert=certificate)
    assert status == 201, body
    status, token = admin(g, pki, "POST", "/admin/v1/tokens", {"tenant": "withcert"}, cert=certificate)
    assert status == 201, token
    # App routes need no client certificate.
    import openai
    c = openai.OpenAI(base_url=g.url + "/v1", api_key=token["token"], max_retries=0,
                      http_client=client(pki))
    assert c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "app"}]).choices[0].message.content == "echo: app"
