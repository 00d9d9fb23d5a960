"""vault-transit: keys in a real OpenBao server's Transit engine (Vault's API), through the CLI."""
import base64
import http.server
import re
import struct
import subprocess
import threading
import time

import pytest

from keyward_cli import decrypt, encrypt, kw
from kms_peers import free_port
from vault_peer import Bao


@pytest.fixture(scope="module")
def bao():
    server = Bao()
    yield server
    server.stop()


def new_key(bao, name, env=None):
    r = kw(env or bao.env(), "keys", "create", f"vault-transit:{name}")
    assert r.returncode == 0, r.stderr
    return f"vault-transit:{name}"


def no_token_in(bao, *results):
    for r in results:
        assert bao.root_token.encode() not in r.stdout + r.stderr


def test_life_cycle_through_the_cli(bao):
    env = bao.env()
    ref = new_key(bao, "life")
    shown = kw(env, "keys", "show", ref)
    assert shown.returncode == 0, shown.stderr
    assert re.match(rb"vault-transit:life state=enabled versions=1 created=\S+ min_decryption_version=1\n", shown.stdout), shown.stdout
    again = kw(env, "keys", "create", ref)
    assert again.returncode == 1 and b"already_exists" in again.stderr
    assert kw(env, "keys", "rotate", ref).returncode == 0
    assert b"versions=2" in kw(env, "keys", "show", ref).stdout
    listed = kw(env, "keys", "list", "vault-transit")
    assert listed.returncode == 0 and b"vault-transit:life state=enabled versions=2" in listed.stdout
    # Another mount names its keys with ?mount=.
    bao.api("POST", "sys/mounts/kw-transit", {"type": "transit"})
    other = new_key(bao, "life?mount=kw-transit")
    assert b"vault-transit:life?mount=kw-transit state=enabled versions=1" in kw(env, "keys", "show", other).stdout
    status, body = bao.api("GET", "kw-transit/keys/life")
    assert status == 200 and body["data"]["type"] == "aes256-gcm96"
    missing = kw(env, "keys", "show", "vault-transit:nope")
    assert missing.returncode == 1 and b"key_not_found" in missing.stderr
    no_token_in(bao, shown, again, listed, missing)


def test_round_trip_across_rotation(bao, tmp_path):
    env = bao.env()
    ref = new_key(bao, "rt")
    data = b"kept under a Transit key " * 100
    r, enc = encrypt(env, tmp_path, data, ref)
    assert r.returncode == 0, r.stderr
    assert b"vault:v1:" in enc.read_bytes()
    assert decrypt(env, tmp_path, enc, ref)[1] == data
    assert kw(env, "keys", "rotate", ref).returncode == 0
    assert decrypt(env, tmp_path, enc, ref)[1] == data  # a v1 data key after rotation
    r, enc = encrypt(env, tmp_path, b"v2", ref)
    assert b"vault:v2:" in enc.read_bytes()  # new data keys use the new version
    assert decrypt(env, tmp_path, enc, ref)[1] == b"v2"


def test_retired_version_fails_closed(bao, tmp_path):
    env = bao.env()
    ref = new_key(bao, "retire")
    r, enc = encrypt(env, tmp_path, b"old", ref)
    old = enc.read_bytes()
    assert kw(env, "keys", "rotate", ref).returncode == 0
    assert bao.api("POST", "transit/keys/retire/config", {"min_decryption_version": 2})[0] in (200, 204)
    assert b"min_decryption_version=2" in kw(env, "keys", "show", ref).stdout
    enc.write_bytes(old)
    r, out = decrypt(env, tmp_path, enc, ref)
    assert r.returncode == 1 and out is None
    assert b"key_disabled" in r.stderr and b"too old" in r.stderr, r.stderr
    assert bao.api("POST", "transit/keys/retire/config", {"min_decryption_version": 1})[0] in (200, 204)
    assert decrypt(env, tmp_path, enc, ref)[1] == b"old"


def edk_ciphertext(message):
    """The Transit ciphertext inside a message's header (ASCII, so a pattern finds it)."""
    return re.search(rb"vault:v\d+:[A-Za-z0-9+/=]+", message).group(0).decode()


def serialized_context(pairs):
    """The ESDK's serialization of an encryption context: count, then sorted length-prefixed pairs."""
    out = struct.pack(">H", len(pairs))
    for k, v in sorted((k.encode(), v.encode()) for k, v in pairs.items()):
        out += struct.pack(">H", len(k)) + k + struct.pack(">H", len(v)) + v
    return out


def test_context_is_bound_and_vault_alone_unwraps(bao, tmp_path):
    """The wrapped data key opens with Transit decrypt and the message's context, without Keyward,
    and not without the context."""
    env = bao.env()
    ref = new_key(bao, "bound")
    # A suite without signing: a signing suite adds its public key to the context the keyring binds.
    r, enc = encrypt(env, tmp_path, b"bound", ref, context=["tenant=acme", "purpose=test"], suite="0x0478")
    assert r.returncode == 0, r.stderr
    ciphertext = edk_ciphertext(enc.read_bytes())
    ad = base64.b64encode(serialized_context({"tenant": "acme", "purpose": "test"})).decode()
    status, body = bao.api("POST", "transit/decrypt/bound", {"ciphertext": ciphertext, "associated_data": ad})
    assert status == 200, body
    assert len(base64.b64decode(body["data"]["plaintext"])) == 32
    status, body = bao.api("POST", "transit/decrypt/bound", {"ciphertext": ciphertext})
    assert status == 400 and "message authentication failed" in body["errors"][0]
    other = base64.b64encode(serialized_context({"tenant": "evil", "purpose": "test"})).decode()
    assert bao.api("POST", "transit/decrypt/bound", {"ciphertext": ciphertext, "associated_data": other})[0] == 400


def test_disable_is_openbaos_soft_delete(bao, tmp_path):
    env = bao.env()
    ref = new_key(bao, "soft")
    r, enc = encrypt(env, tmp_path, b"soft", ref)
    assert kw(env, "keys", "disable", ref).returncode == 0
    assert b"state=disabled" in kw(env, "keys", "show", ref).stdout
    status, body = bao.api("GET", "transit/keys/soft")
    assert body["data"]["soft_deleted"] is True  # the server itself refuses the key to every client
    r, out = decrypt(env, tmp_path, enc, ref)
    assert r.returncode == 1 and out is None and b"key_disabled" in r.stderr, r.stderr
    message = enc.read_bytes()
    r2, _ = encrypt(env, tmp_path, b"x", ref)
    assert r2.returncode == 1 and b"key_disabled" in r2.stderr
    assert kw(env, "keys", "enable", ref).returncode == 0
    enc.write_bytes(message)
    assert decrypt(env, tmp_path, enc, ref)[1] == b"soft"
    deletion = kw(env, "keys", "schedule-deletion", ref, "--days", "7")
    assert deletion.returncode != 0 and b"keeps no deletion schedule" in deletion.stderr


def test_encrypt_never_creates_a_missing_key(bao, tmp_path):
    """Transit's encrypt creates a key it does not know when the token may; Keyward must not, on
    either path: a new data key (datakey) and an existing one wrapped by a second keyring (encrypt)."""
    env = bao.env()
    r, enc = encrypt(env, tmp_path, b"x", "vault-transit:typo")
    assert r.returncode == 1 and b"key_not_found" in r.stderr and not enc.exists()
    (tmp_path / "p").write_bytes(b"x")
    raw = "raw-aes:namespace=t,name=k,key=base64:" + base64.b64encode(bytes(range(32))).decode()
    r = kw(env, "encrypt", "-i", str(tmp_path / "p"), "-o", str(tmp_path / "two.enc"),
           "--wrapping-key", raw, "--wrapping-key", "vault-transit:typo")
    assert r.returncode == 1 and b"key_not_found" in r.stderr, r.stderr
    assert bao.api("GET", "transit/keys/typo")[0] == 404


def test_approle_login(bao, tmp_path):
    bao.api("POST", "sys/auth/approle", {"type": "approle"})
    bao.api("PUT", "sys/policies/acl/kw-role", {"policy": """
        path "transit/keys/role" { capabilities = ["read"] }
        path "transit/encrypt/role" { capabilities = ["update"] }
        path "transit/decrypt/role" { capabilities = ["update"] }
        path "transit/datakey/plaintext/role" { capabilities = ["update"] }
    """})
    bao.api("POST", "auth/approle/role/keyward", {"token_policies": ["kw-role"], "token_ttl": "1h"})
    role_id = bao.api("GET", "auth/approle/role/keyward/role-id")[1]["data"]["role_id"]
    secret_id = bao.api("POST", "auth/approle/role/keyward/secret-id")[1]["data"]["secret_id"]
    ref = new_key(bao, "role")
    env = {"VAULT_ADDR": bao.url, "VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": secret_id}
    r, enc = encrypt(env, tmp_path, b"by approle", ref)
    assert r.returncode == 0, r.stderr
    assert decrypt(env, tmp_path, enc, ref)[1] == b"by approle"
    assert secret_id.encode() not in r.stdout + r.stderr
    # The role's policy covers only its key.
    new_key(bao, "elsewhere")
    r, _ = encrypt(env, tmp_path, b"x", "vault-transit:elsewhere")
    assert r.returncode == 1 and b"access_denied" in r.stderr
    # A lease of one second: renewed after two thirds of it, not at once in a loop of logins.
    bao.api("POST", "auth/approle/role/brief", {"token_policies": ["kw-role"], "token_ttl": "1s", "token_max_ttl": "1s"})
    brief = {"VAULT_ADDR": bao.url, "VAULT_ROLE_ID": bao.api("GET", "auth/approle/role/brief/role-id")[1]["data"]["role_id"],
             "VAULT_SECRET_ID": bao.api("POST", "auth/approle/role/brief/secret-id")[1]["data"]["secret_id"]}
    r, enc = encrypt(brief, tmp_path, b"brief", ref, name="brief")
    assert r.returncode == 0, r.stderr
    assert decrypt(brief, tmp_path, enc, ref)[1] == b"brief"
    bad = {**env, "VAULT_SECRET_ID": "not-the-secret"}
    r, _ = encrypt(bad, tmp_path, b"x", ref)
    assert r.returncode == 1 and b"invalid role or secret ID" in r.stderr and b"not-the-secret" not in r.stderr


def test_wrong_and_revoked_tokens_are_access_denied(bao, tmp_path):
    ref = new_key(bao, "tokens")
    r, _ = encrypt({"VAULT_ADDR": bao.url, "VAULT_TOKEN": "s.not-a-token"}, tmp_path, b"x", ref)
    assert r.returncode == 1 and b"access_denied" in r.stderr and b"s.not-a-token" not in r.stderr
    # A token that worked, then expired: revoked at once rather than waited out, which is the same
    # answer from the server (403) without a race against a short TTL on a busy machine.
    status, body = bao.api("POST", "auth/token/create", {"ttl": "1h", "policies": ["root"]})
    short = body["auth"]["client_token"]
    r, enc = encrypt(bao.env(short), tmp_path, b"x", ref)
    assert r.returncode == 0, r.stderr
    assert bao.api("POST", "auth/token/revoke", {"token": short})[0] in (200, 204)
    r, out = decrypt(bao.env(short), tmp_path, enc, ref)
    assert r.returncode == 1 and out is None and b"access_denied" in r.stderr
    assert short.encode() not in r.stdout + r.stderr


def test_missing_configuration_is_a_clear_error(bao, tmp_path):
    r, _ = encrypt({}, tmp_path, b"x", "vault-transit:k")
    assert r.returncode != 0 and b"VAULT_ADDR" in r.stderr
    r, _ = encrypt({"VAULT_ADDR": bao.url}, tmp_path, b"x", "vault-transit:k")
    assert r.returncode != 0 and b"VAULT_TOKEN" in r.stderr
    r = kw(bao.env(), "keys", "show", "vault-transit:bad/name")
    assert r.returncode != 0 and b"invalid_argument" in r.stderr


def test_server_down_is_key_unavailable(bao, tmp_path):
    ref = new_key(bao, "down")
    env = {**bao.env(), "VAULT_ADDR": f"http://127.0.0.1:{free_port()}", "KEYWARD_VAULT_TIMEOUT_MS": "2000"}
    start = time.monotonic()
    r, enc = encrypt(env, tmp_path, b"x", ref)
    assert r.returncode == 1 and b"key_unavailable" in r.stderr and not enc.exists()
    assert time.monotonic() - start < 5


def test_throttling_by_a_rate_limit_quota(bao, tmp_path):
    """OpenBao's own rate-limit quota answers 429: retried with back-off, then a clear error."""
    ref = new_key(bao, "quota")
    assert bao.api("POST", "sys/quotas/rate-limit/kw", {"path": "transit/", "rate": 1, "interval": "10s"})[0] in (200, 204)
    try:
        first, _ = encrypt(bao.env(), tmp_path, b"x", ref)
        second, _ = encrypt(bao.env(), tmp_path, b"y", ref)
        assert first.returncode == 1 or second.returncode == 1
        failed = first if first.returncode == 1 else second
        assert b"throttled" in failed.stderr, failed.stderr
    finally:
        bao.api("DELETE", "sys/quotas/rate-limit/kw")
    r, _ = encrypt(bao.env(), tmp_path, b"z", ref)
    assert r.returncode == 0, r.stderr


def test_tls_with_the_servers_ca_and_not_with_another(tmp_path):
    server = Bao(tls=True)
    try:
        env = server.env()
        ref = new_key(server, "tls", env)
        r, enc = encrypt(env, tmp_path, b"over tls", ref)
        assert r.returncode == 0, r.stderr
        assert decrypt(env, tmp_path, enc, ref)[1] == b"over tls"
        other = tmp_path / "other-ca.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(tmp_path / "other.key"), "-out", str(other), "-subj", "/CN=other", "-days", "1"],
                       check=True, capture_output=True)
        # async-http-client retries failed connections until the deadline: the call's time-out bounds it.
        start = time.monotonic()
        r, out = decrypt({**env, "VAULT_CACERT": str(other), "KEYWARD_VAULT_TIMEOUT_MS": "1500"}, tmp_path, enc, ref)
        assert r.returncode == 1 and out is None and b"key_unavailable" in r.stderr
        assert time.monotonic() - start < 5
    finally:
        server.stop()


def test_an_answer_that_does_not_parse(tmp_path):
    """A mock of our own, since no real Vault answers garbage: never a crash, a clear error."""
    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "9")
            self.end_headers()
            self.wfile.write(b"not json!")
        do_POST = do_GET

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"VAULT_ADDR": f"http://127.0.0.1:{server.server_port}", "VAULT_TOKEN": "t"}
        r, enc = encrypt(env, tmp_path, b"x", "vault-transit:k")
        assert r.returncode == 1 and b"key_unavailable" in r.stderr and b"cannot read" in r.stderr, r.stderr
        assert not enc.exists()
    finally:
        server.shutdown()


def test_a_namespace_holds_its_own_keys(bao, tmp_path):
    assert bao.api("POST", "sys/namespaces/team-a", {})[0] in (200, 204)
    req_env = {**bao.env(), "VAULT_NAMESPACE": "team-a"}
    status, _ = bao.api("POST", "sys/mounts/transit", {"type": "transit"}, namespace="team-a")
    assert status in (200, 204)
    ref = new_key(bao, "in-team-a", req_env)
    r, enc = encrypt(req_env, tmp_path, b"namespaced", ref)
    assert r.returncode == 0, r.stderr
    assert decrypt(req_env, tmp_path, enc, ref)[1] == b"namespaced"
    assert bao.api("GET", "transit/keys/in-team-a", namespace="team-a")[0] == 200
    assert bao.api("GET", "transit/keys/in-team-a")[0] == 404  # not in the root namespace
    r, out = decrypt(bao.env(), tmp_path, enc, ref)
    assert r.returncode == 1 and out is None and b"key_not_found" in r.stderr, r.stderr


def test_a_key_deleted_in_vault_fails_closed(bao, tmp_path):
    env = bao.env()
    ref = new_key(bao, "deleted")
    r, enc = encrypt(env, tmp_path, b"gone", ref)
    assert r.returncode == 0, r.stderr
    assert bao.api("POST", "transit/keys/deleted/config", {"deletion_allowed": True})[0] in (200, 204)
    assert bao.api("DELETE", "transit/keys/deleted")[0] == 204
    r, out = decrypt(env, tmp_path, enc, ref)
    assert r.returncode == 1 and out is None and b"key_not_found" in r.stderr, r.stderr
    # And the next wrap does not mint a new key under the old name.
    r, _ = encrypt(env, tmp_path, b"x", ref, name="again")
    assert r.returncode == 1 and b"key_not_found" in r.stderr
    assert bao.api("GET", "transit/keys/deleted")[0] == 404
