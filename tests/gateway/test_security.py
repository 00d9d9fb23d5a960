"""Tenant isolation, revocation, and the canary test: no secret or plaintext byte at rest."""
import json
import os
import signal
import sqlite3
import urllib.parse
import subprocess
import threading
import time
import uuid

import openai
import pytest

from keyward_paths import keyward_bin


def chat(client, text, model="mock-1"):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def test_other_tenants_records_are_not_found(gateway):
    a = gateway.openai(gateway.new_tenant("iso-a"))
    b = gateway.openai(gateway.new_tenant("iso-b"))
    r = chat(a, "secret of a")
    for call in (lambda: b.chat.completions.retrieve(r.id), lambda: b.chat.completions.messages.list(r.id),
                 lambda: b.chat.completions.delete(r.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert r.id not in [c.id for c in b.chat.completions.list()]
    assert a.chat.completions.retrieve(r.id).id == r.id  # B's delete removed nothing


def test_record_copied_to_another_tenant_fails_to_decrypt(gateway):
    a = gateway.openai(gateway.new_tenant("copy-a"))
    b = gateway.openai(gateway.new_tenant("copy-b"))
    r = chat(a, "moved-CANARY")
    db = sqlite3.connect(f"{gateway.data}/keyward.sqlite3", timeout=10)
    with db:
        db.execute("INSERT INTO records(tenant, id, kind, created_at, expires_at, model, metadata, header, body) "
                   "SELECT 'copy-b', id, kind, created_at, expires_at, model, metadata, header, body "
                   "FROM records WHERE tenant = 'copy-a' AND id = ?", (r.id,))
    db.close()
    with pytest.raises(openai.InternalServerError) as e:
        b.chat.completions.retrieve(r.id)
    assert e.value.code == "record_unreadable"
    assert "moved-CANARY" not in e.value.response.text
    # Swapping headers between two records of one tenant fails too: the record id is bound.
    r2 = chat(a, "second")
    db = sqlite3.connect(f"{gateway.data}/keyward.sqlite3", timeout=10)
    with db:
        (h1,) = db.execute("SELECT header FROM records WHERE tenant='copy-a' AND id=? AND kind='chat.response'",
                           (r.id,)).fetchone()
        (b1,) = db.execute("SELECT body FROM records WHERE tenant='copy-a' AND id=? AND kind='chat.response'",
                           (r.id,)).fetchone()
        db.execute("UPDATE records SET header=?, body=? WHERE tenant='copy-a' AND id=? AND kind='chat.response'",
                   (h1, b1, r2.id))
    db.close()
    with pytest.raises(openai.InternalServerError):
        a.chat.completions.retrieve(r2.id)


def test_revocation_stops_the_tenant_at_once_and_restoring_resumes(gateway, upstream):
    token_a = gateway.new_tenant("rev-a")
    a = gateway.openai(token_a)
    b = gateway.openai(gateway.new_tenant("rev-b"))
    old = chat(a, "before")
    env = {**os.environ, "KEYWARD_ADMIN_TOKEN": gateway.role_token("key-admin")}

    out = subprocess.run([keyward_bin(), "keys", "disable", "local:rev-a", "--url", gateway.url],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    before = upstream.count
    with pytest.raises(openai.PermissionDeniedError) as e:
        chat(a, "after")
    assert e.value.status_code == 403 and e.value.code == "key_revoked"
    with pytest.raises(openai.PermissionDeniedError):
        a.chat.completions.retrieve(old.id)
    with pytest.raises(openai.PermissionDeniedError):
        a.embeddings.create(model="mock-embed", input="x")
    assert upstream.count == before, "the upstream received a request of a revoked tenant"
    assert chat(b, "unaffected").choices[0].message.content == "echo: unaffected"

    out = subprocess.run([keyward_bin(), "keys", "enable", "local:rev-a", "--url", gateway.url],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert chat(a, "again").choices[0].message.content == "echo: again"
    assert a.chat.completions.retrieve(old.id).choices[0].message.content == "echo: before"


def test_key_store_unreachable_is_503_and_nothing_is_sent(fresh_gateway, upstream):
    g = fresh_gateway()
    # A tenant on AWS KMS at an endpoint where nothing listens.
    g.stop()
    g.env.update({"AWS_ENDPOINT_URL_KMS": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
                  "AWS_REGION": "us-east-1", "KEYWARD_KMS_TIMEOUT_MS": "500"})
    g.start()
    arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    db = sqlite3.connect(f"{g.data}/keyward.sqlite3", timeout=10)
    with db:  # no KMS to describe the key at creation: insert the tenant the way the API would
        db.execute("INSERT INTO tenants(name, key, store, retention_days, created_at) VALUES ('kms', ?, 'always', 30, 0)",
                   ("aws-kms:" + arn,))
    db.close()
    status, _, _ = g.admin("PUT", "/admin/v1/keys/" + urllib.parse.quote("aws-kms:" + arn, safe="") + "/policy",
                           {"grants": [{"principals": ["tenant:kms"], "purposes": ["inference"]}]})
    assert status == 200
    status, token, _ = g.admin("POST", "/admin/v1/tokens", {"tenant": "kms"})
    before = upstream.count
    with pytest.raises(openai.InternalServerError) as e:
        chat(g.openai(token["token"]), "x")
    assert e.value.status_code == 503 and e.value.code == "key_unavailable"
    assert upstream.count == before
    assert g.request("GET", "/readyz")[0] == 503


def test_tokens_are_revocable(gateway):
    status, _, _ = gateway.admin("POST", "/admin/v1/tokens", {"role": "app"})
    assert status == 400  # an app token needs a tenant
    token = gateway.new_tenant("tok-owner")
    client = gateway.openai(token)
    chat(client, "works")
    status, tokens, _ = gateway.admin("POST", "/admin/v1/tokens", {"tenant": "tok-owner"})
    second = gateway.openai(tokens["token"])
    status, body, _ = gateway.admin("DELETE", f"/admin/v1/tokens/{tokens['id']}")
    assert status == 200 and body["deleted"]
    with pytest.raises(openai.AuthenticationError):
        chat(second, "no longer")
    chat(client, "still works")


def scan(paths, canaries):
    """Every file under `paths` that contains any canary, raw or JSON-escaped."""
    found = []
    for root in paths:
        for dirpath, _, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                try:
                    data = open(path, "rb").read()
                except OSError:
                    continue
                for c in canaries:
                    for form in {c.encode(), json.dumps(c)[1:-1].encode()}:
                        if form in data:
                            found.append((path, c))
    return found


def test_canaries_reach_no_byte_at_rest_and_sigterm_drains(fresh_gateway, upstream):
    g = fresh_gateway()
    token = g.new_tenant("canary")
    client = g.openai(token)
    prompt = "prompt-CANARY-" + uuid.uuid4().hex
    streamed = "stream-CANARY-" + uuid.uuid4().hex
    claude = "claude-CANARY-" + uuid.uuid4().hex
    r = chat(client, prompt)
    assert prompt in r.choices[0].message.content  # the completion carries the canary too
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="mock-1", stream=True, messages=[{"role": "user", "content": streamed}]) if c.choices)
    assert streamed in text
    assert claude in g.anthropic(token).messages.create(
        model="claude-x", max_tokens=9, messages=[{"role": "user", "content": claude}]).content[0].text
    # A provider key the tenant brings is stored encrypted and used instead of the configured one.
    status, _, _ = g.admin("PUT", "/admin/v1/tenants/canary/provider-keys/mock", {"api_key": upstream.tenant_key})
    assert status == 204
    chat(client, prompt + " again")
    assert upstream.keys_seen()[-1] == "Bearer " + upstream.tenant_key
    assert client.chat.completions.retrieve(r.id).choices[0].message.content == "echo: " + prompt

    # SIGTERM while a slow stream is in flight: the stream completes, the process exits 0.
    done = {}

    def slow():
        pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="mock-drip", stream=True, messages=[{"role": "user", "content": "drain me now"}]) if c.choices]
        done["text"] = "".join(pieces)
    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.6)
    g.proc.send_signal(signal.SIGTERM)
    t.join(timeout=20)
    assert g.proc.wait(timeout=20) == 0
    assert done.get("text") == "echo: drain me now"
    g.stop()

    canaries = [prompt, streamed, claude, upstream.api_key, upstream.tenant_key, g.admin_token, token]
    leaks = scan([g.data, g.tmp], canaries)
    assert leaks == []
    assert os.path.getsize(g.stderr_path) > 0, "the server wrote no log at all"
    for log in (g.stdout_path, g.stderr_path):
        data = open(log, "rb").read()
        for c in canaries:
            assert c.encode() not in data, f"{c[:12]}… in {log}"
    # The records are there, encrypted: the run did store what it was asked to.
    db = sqlite3.connect(f"file:{g.data}/keyward.sqlite3?mode=ro", uri=True)
    assert db.execute("SELECT count(*) FROM records WHERE tenant='canary'").fetchone()[0] >= 8
    db.close()
