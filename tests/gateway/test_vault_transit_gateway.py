"""A tenant whose master key is a Transit key in a real OpenBao server: it serves, disabling the key
(OpenBao's soft delete) answers 403 before any upstream call, and the server going away fails closed."""
import os
import subprocess
import sys
import urllib.parse

import openai
import pytest

from keyward_paths import keyward_bin

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop"))
from vault_peer import Bao  # noqa: E402


def chat(client, text):
    return client.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": text}], store=True)


@pytest.fixture
def bao():
    server = Bao()
    yield server
    server.stop()


def grant(g, ref, tenant):
    status, body, _ = g.admin("PUT", "/admin/v1/keys/" + urllib.parse.quote(ref, safe="") + "/policy",
                              {"grants": [{"principals": [f"tenant:{tenant}"], "purposes": ["inference", "retrieval"]}]})
    assert status == 200, body


def test_a_tenant_on_a_transit_key(fresh_gateway, upstream, bao):
    for name in ("gw", "gw-later"):
        assert bao.api("POST", f"transit/keys/{name}", {"type": "aes256-gcm96"})[0] == 200
    g = fresh_gateway(extra_env={**bao.env(), "KEYWARD_VAULT_TIMEOUT_MS": "1000"})
    ref = "vault-transit:gw"
    grant(g, ref, "vt")
    client = g.openai(g.new_tenant("vt", key=ref))
    first = chat(client, "kept under transit")
    assert first.choices[0].message.content == "echo: kept under transit"
    assert client.chat.completions.retrieve(first.id).choices[0].message.content == "echo: kept under transit"
    status, key, _ = g.as_role("key-admin", "GET", "/admin/v1/keys/" + urllib.parse.quote(ref, safe=""))
    assert status == 200 and key["state"] == "enabled" and key["min_decryption_version"] == 1 and key["tenants"] == ["vt"]

    # Disabled through the gateway: OpenBao refuses the key to everyone, the gateway drops its data keys.
    env = {**os.environ, "KEYWARD_ADMIN_TOKEN": g.role_token("key-admin")}
    out = subprocess.run([keyward_bin(), "keys", "disable", ref, "--url", g.url], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert bao.api("GET", "transit/keys/gw")[1]["data"]["soft_deleted"] is True
    before = upstream.count
    with pytest.raises(openai.PermissionDeniedError) as e:
        chat(client, "after")
    assert e.value.status_code == 403 and e.value.code == "key_revoked"
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.retrieve(first.id)
    assert upstream.count == before, "the upstream received a request of a revoked tenant"
    out = subprocess.run([keyward_bin(), "keys", "enable", ref, "--url", g.url], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert chat(client, "again").choices[0].message.content == "echo: again"

    # The server goes away: a tenant without a cached data key gets 503, and nothing goes upstream.
    grant(g, "vault-transit:gw-later", "later")
    later = g.openai(g.new_tenant("later", key="vault-transit:gw-later"))
    bao.stop()
    before = upstream.count
    with pytest.raises(openai.InternalServerError) as e:
        chat(later, "x")
    assert e.value.status_code == 503 and e.value.code == "key_unavailable"
    assert upstream.count == before
    with open(g.stderr_path, "rb") as f:
        assert bao.root_token.encode() not in f.read()
