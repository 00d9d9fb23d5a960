"""A tenant whose master key lives in a remote key store run for real: OpenBao's Transit engine and
a PyKMIP server. Each serves, disabling the key through the gateway answers 403 before any upstream
call (and, where the store has a way back, enabling resumes), and the store going away fails closed."""
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.parse

import openai
import pytest

from keyward_paths import keyward_bin

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop"))
from kmip_peer import PyKMIP  # noqa: E402
from vault_peer import Bao  # noqa: E402


class Transit:
    """OpenBao: disable is its soft delete, which enable undoes."""
    can_enable = True

    def __init__(self):
        self.server = Bao()
        self.env = {**self.server.env(), "KEYWARD_VAULT_TIMEOUT_MS": "1000"}
        self.gateway = {"extra_env": self.env}
        self.secret = self.server.root_token

    def create(self, label):
        assert self.server.api("POST", f"transit/keys/{label}", {"type": "aes256-gcm96"})[0] == 200
        return f"vault-transit:{label}"

    def disabled_on_the_server(self, label):
        return self.server.api("GET", f"transit/keys/{label}")[1]["data"]["soft_deleted"] is True

    def gone_from_the_server(self, label):
        return self.server.api("GET", f"transit/keys/{label}")[0] == 404


class KMIP:
    """PyKMIP: disable is Revoke, which KMIP cannot undo."""
    can_enable = False

    def __init__(self):
        self.server = PyKMIP()
        self.env = {**self.server.env(), "KEYWARD_KMIP_TIMEOUT_MS": "1500"}
        # The gateway reads the server and its identity from its config file, not the variables.
        e = self.server.env()
        self.gateway = {"config_extra": {"kmip": {"server": e["KEYWARD_KMIP_SERVER"], "ca_file": e["KEYWARD_KMIP_CA"],
                                                   "cert_file": e["KEYWARD_KMIP_CERT"], "key_file": e["KEYWARD_KMIP_KEY"],
                                                   "timeout_ms": 1500}}}
        self.secret = None

    def create(self, label):
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}, **self.env}
        r = subprocess.run([keyward_bin(), "keys", "create", f"kmip:name={label}"], env=env, capture_output=True)
        assert r.returncode == 0, r.stderr
        return f"kmip:name={label}"

    def disabled_on_the_server(self, label):
        """The state the KMIP server itself reports, read by a separate CLI process."""
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}, **self.env}
        r = subprocess.run([keyward_bin(), "keys", "show", f"kmip:name={label}"], env=env, capture_output=True)
        return b"state=disabled" in r.stdout

    def gone_from_the_server(self, label):
        """Destroyed: PyKMIP forgets a destroyed object, so the name finds nothing."""
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}, **self.env}
        r = subprocess.run([keyward_bin(), "keys", "show", f"kmip:name={label}"], env=env, capture_output=True)
        return b"state=destroyed" in r.stdout or (r.returncode != 0 and b"no key named" in r.stderr)


@pytest.fixture(params=[Transit, KMIP], ids=["vault-transit", "kmip"])
def store(request):
    s = request.param()
    yield s
    s.server.stop()


def chat(client, text):
    return client.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": text}], store=True)


def test_a_tenant_on_a_remote_key(fresh_gateway, upstream, store):
    ref, later_ref = store.create("gw"), store.create("gw-later")
    g = fresh_gateway(**store.gateway)
    client = g.openai(g.new_tenant("remote", key=ref))
    first = chat(client, "kept in the key store")
    assert first.choices[0].message.content == "echo: kept in the key store"
    assert client.chat.completions.retrieve(first.id).choices[0].message.content == "echo: kept in the key store"
    key_path = "/admin/v1/keys/" + urllib.parse.quote(ref, safe="")
    status, key, _ = g.as_role("key-admin", "GET", key_path)
    assert status == 200 and key["state"] == "enabled" and key["tenants"] == ["remote"]

    # Disabled through the gateway: the store refuses the key, the gateway drops its data keys.
    admin_env = {**os.environ, "KEYWARD_ADMIN_TOKEN": g.role_token("key-admin")}
    out = subprocess.run([keyward_bin(), "keys", "disable", ref, "--url", g.url], env=admin_env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert store.disabled_on_the_server("gw")
    assert g.as_role("key-admin", "GET", key_path)[1]["state"] == "disabled"
    before = upstream.count
    with pytest.raises(openai.PermissionDeniedError) as e:
        chat(client, "after")
    assert e.value.status_code == 403 and e.value.code == "key_revoked"
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.retrieve(first.id)
    assert upstream.count == before, "the upstream received a request of a revoked tenant"
    out = subprocess.run([keyward_bin(), "keys", "enable", ref, "--url", g.url], env=admin_env, capture_output=True, text=True)
    if store.can_enable:
        assert out.returncode == 0, out.stderr
        assert chat(client, "again").choices[0].message.content == "echo: again"
    else:
        assert out.returncode != 0 and "cannot become active again" in out.stderr

    # The store goes away: a tenant without a cached data key gets 503, and nothing goes upstream.
    later = g.openai(g.new_tenant("later", key=later_ref))
    store.server.stop()
    before = upstream.count
    with pytest.raises(openai.InternalServerError) as e:
        chat(later, "x")
    assert e.value.status_code == 503 and e.value.code == "key_unavailable"
    assert upstream.count == before
    if store.secret:
        with open(g.stderr_path, "rb") as f:
            assert store.secret.encode() not in f.read()


def test_an_approle_token_is_renewed_before_it_expires(fresh_gateway, upstream, tmp_path):
    """AppRole tokens that live 3 s, data keys cached for 0.5 s, requests for 8 s: every request
    serves, Keyward logged in again several times, and OpenBao's audit log shows no request refused
    (renewal came before expiry, not after a refusal)."""
    audit_log = tmp_path / "bao-audit.log"
    bao = Bao(audit_log=audit_log)
    try:
        bao.api("POST", "sys/auth/approle", {"type": "approle"})
        bao.api("PUT", "sys/policies/acl/kw-gw", {"policy": """
            path "transit/keys/renewed" { capabilities = ["read"] }
            path "transit/encrypt/renewed" { capabilities = ["update"] }
            path "transit/decrypt/renewed" { capabilities = ["update"] }
            path "transit/datakey/plaintext/renewed" { capabilities = ["update"] }
        """})
        bao.api("POST", "auth/approle/role/gw", {"token_policies": ["kw-gw"], "token_ttl": "3s", "token_max_ttl": "3s"})
        role_id = bao.api("GET", "auth/approle/role/gw/role-id")[1]["data"]["role_id"]
        secret_id = bao.api("POST", "auth/approle/role/gw/secret-id")[1]["data"]["secret_id"]
        assert bao.api("POST", "transit/keys/renewed", {"type": "aes256-gcm96"})[0] == 200
        g = fresh_gateway(extra_env={"VAULT_ADDR": bao.url, "VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": secret_id},
                          config_extra={"data_key_cache": {"max_age_seconds": 0.5}})
        client = g.openai(g.new_tenant("renewing", key="vault-transit:renewed"))
        ids = []
        deadline = time.time() + 8
        while time.time() < deadline:
            ids.append(chat(client, f"n{len(ids)}").id)
            time.sleep(0.4)
        for n, i in enumerate(ids):
            assert client.chat.completions.retrieve(i).choices[0].message.content == f"echo: n{n}"
        entries = [json.loads(line) for line in audit_log.read_text().splitlines() if line.strip()]
        logins = [e for e in entries if e.get("type") == "response" and e["request"]["path"] == "auth/approle/login"]
        refused = [e for e in entries if e.get("type") == "response" and "permission denied" in str(e.get("error", ""))]
        assert len(logins) >= 3, len(logins)
        assert refused == [], refused[:1]
        with open(g.stderr_path, "rb") as f:
            assert secret_id.encode() not in f.read()
    finally:
        bao.stop()


def test_a_transit_key_deleted_in_vault_stops_the_tenant_and_is_not_recreated(fresh_gateway, upstream):
    bao = Bao()
    try:
        assert bao.api("POST", "transit/keys/doomed", {"type": "aes256-gcm96"})[0] == 200
        g = fresh_gateway(extra_env=bao.env(), config_extra={"data_key_cache": {"max_age_seconds": 0.5}})
        client = g.openai(g.new_tenant("doomed", key="vault-transit:doomed"))
        assert chat(client, "before").choices[0].message.content == "echo: before"
        assert bao.api("POST", "transit/keys/doomed/config", {"deletion_allowed": True})[0] in (200, 204)
        assert bao.api("DELETE", "transit/keys/doomed")[0] == 204
        time.sleep(1)  # past the data key cache's age
        before = upstream.count
        with pytest.raises(openai.APIStatusError) as e:
            chat(client, "after")
        assert e.value.status_code in (403, 503), e.value
        assert upstream.count == before
        assert bao.api("GET", "transit/keys/doomed")[0] == 404, "a wrap re-created the deleted key"
    finally:
        bao.stop()


def test_kmip_connections_kept_across_a_server_restart(fresh_gateway, upstream):
    """The KMIP server restarts (same port and database): the gateway's kept connections are closed
    under it, and the next request that needs the server goes on a new connection at once, rather
    than waiting out the call's deadline on a dead one."""
    kmip = PyKMIP()
    try:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}, **kmip.env()}
        r = subprocess.run([keyward_bin(), "keys", "create", "kmip:name=restarted"], env=env, capture_output=True)
        assert r.returncode == 0, r.stderr
        g = fresh_gateway(extra_env={**kmip.env(), "KEYWARD_KMIP_TIMEOUT_MS": "5000"},
                          config_extra={"data_key_cache": {"max_age_seconds": 0.5}})
        client = g.openai(g.new_tenant("restarted", key="kmip:name=restarted"))
        first = chat(client, "before the restart")
        kmip.halt()
        kmip.start()
        time.sleep(1)  # past the data key cache's age: the next request calls the server
        started = time.monotonic()
        assert chat(client, "after the restart").choices[0].message.content == "echo: after the restart"
        assert time.monotonic() - started < 3
        assert client.chat.completions.retrieve(first.id).choices[0].message.content == "echo: before the restart"
    finally:
        kmip.stop()


def test_a_deletion_keyward_schedules_destroys_the_key_in_its_store(fresh_gateway, upstream, store):
    """Transit and KMIP destroy at once, so the gateway keeps the waiting period: the store refuses
    the key meanwhile, a cancellation brings it back disabled, and when the period ends (moved
    into the past in the database here) the deletion service destroys it in the store, once,
    logged; the tenant's records are then shredded (410)."""
    ref = store.create("doomed")
    g = fresh_gateway(**{**store.gateway, "config_extra": {**store.gateway.get("config_extra", {}), "purge_interval_seconds": 0.3}})
    client = g.openai(g.new_tenant("doomed", key=ref))
    first = chat(client, "kept until the key goes")
    path = "/admin/v1/keys/" + urllib.parse.quote(ref, safe="")
    assert g.as_role("key-admin", "POST", path + "/schedule-deletion", {"days": 3})[0] == 400  # 7 to 30
    status, key, _ = g.as_role("key-admin", "POST", path + "/schedule-deletion", {"days": 7})
    assert status == 200 and key["state"] == "pending-deletion", key
    assert abs(key["deletion_date"] - (time.time() + 7 * 86400)) < 60
    assert store.disabled_on_the_server("doomed"), "the store still serves a key pending deletion"
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.retrieve(first.id)
    status, key, _ = g.as_role("key-admin", "POST", path + "/cancel-deletion")
    assert status == 200 and key["state"] == "disabled", key
    assert g.as_role("key-admin", "POST", path + "/schedule-deletion", {"days": 7})[0] == 200
    # Seven days later, as far as the gateway's database knows.
    db = sqlite3.connect(f"{g.data}/keyward.sqlite3", timeout=10)
    with db:
        db.execute("UPDATE key_states SET delete_at = ? WHERE key = ?", (int(time.time() * 1000) - 1000, ref))
    deadline = time.time() + 15
    while time.time() < deadline and not store.gone_from_the_server("doomed"):
        time.sleep(0.3)
    assert store.gone_from_the_server("doomed")
    status, key, _ = g.as_role("key-admin", "GET", path)
    assert status == 200 and key["state"] == "destroyed", key
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.retrieve(first.id)
    assert e.value.status_code == 410 and e.value.code == "key_destroyed"
    assert g.as_role("key-admin", "POST", path + "/cancel-deletion")[0] == 400
    time.sleep(1)  # further rounds of the service find nothing left to do
    events = db.execute("SELECT operation, result, actor FROM audit_events WHERE key = ? ORDER BY seq", (ref,)).fetchall()
    assert [e for e in events if e[0] == "destroy_key"] == [("destroy_key", "ok", "system")], events
    assert db.execute("SELECT state, delete_at FROM key_states WHERE key = ?", (ref,)).fetchall() == [("destroyed", None)]
    status, purged, _ = g.admin("POST", "/admin/v1/tenants/doomed/purge-shredded")
    assert status == 200 and purged["deleted"] == 2, purged


def test_keywards_revocation_holds_when_the_store_enables_the_key_behind_its_back(fresh_gateway, upstream):
    """A Transit key disabled through the gateway, then restored in OpenBao directly (as a Vault
    operator could; on HashiCorp Vault, which has no soft delete, it was never disabled there):
    Keyward's own revocation still refuses the tenant, the key shows both states, and the CLI
    says so. Enabling through the gateway serves again."""
    bao = Bao()
    try:
        assert bao.api("POST", "transit/keys/held", {"type": "aes256-gcm96"})[0] == 200
        g = fresh_gateway(extra_env=bao.env(), config_extra={"data_key_cache": {"max_age_seconds": 0.5}})
        client = g.openai(g.new_tenant("held", key="vault-transit:held"))
        first = chat(client, "before")
        admin_env = {**os.environ, "KEYWARD_ADMIN_TOKEN": g.role_token("key-admin")}
        out = subprocess.run([keyward_bin(), "keys", "disable", "vault-transit:held", "--url", g.url], env=admin_env,
                             capture_output=True, text=True)
        assert out.returncode == 0 and "state=disabled" in out.stdout, (out.stdout, out.stderr)
        assert bao.api("POST", "transit/keys/held/soft-delete-restore", {})[0] in (200, 204)
        time.sleep(1)  # past the data key cache's age
        before = upstream.count
        with pytest.raises(openai.PermissionDeniedError) as e:
            chat(client, "after")
        assert e.value.code == "key_revoked"
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.retrieve(first.id)
        assert upstream.count == before
        status, key, _ = g.as_role("key-admin", "GET", "/admin/v1/keys/vault-transit%3Aheld")
        assert key["state"] == "disabled" and key["store_state"] == "enabled", key
        out = subprocess.run([keyward_bin(), "keys", "disable", "vault-transit:held", "--url", g.url], env=admin_env,
                             capture_output=True, text=True)
        assert out.returncode == 0 and "state=disabled" in out.stdout, out.stdout
        bao.api("POST", "transit/keys/held/soft-delete-restore", {})
        out = subprocess.run([keyward_bin(), "keys", "enable", "vault-transit:held", "--url", g.url], env=admin_env,
                             capture_output=True, text=True)
        assert out.returncode == 0 and "state=enabled" in out.stdout, (out.stdout, out.stderr)
        assert chat(client, "again").choices[0].message.content == "echo: again"
        assert client.chat.completions.retrieve(first.id).choices[0].message.content == "echo: before"
    finally:
        bao.stop()
