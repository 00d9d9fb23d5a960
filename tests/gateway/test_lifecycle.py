"""Roles and key policies, the audit log (tampering, fail-closed), alerts, and key life cycle
through the admin API, against `keyward serve` with the official openai SDK."""
import hashlib
import http.server
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.parse

import openai
import pytest

from keyward_paths import keyward_bin


def chat(client, text, model="keyward/echo"):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def ref(key):
    return urllib.parse.quote(key, safe="")


def audit(g, **query):
    """Every audit event matching `query`, paged through as an auditor."""
    events, after = [], 0
    while True:
        q = urllib.parse.urlencode({**query, "after": after, "limit": 1000})
        status, body, _ = g.as_role("auditor", "GET", f"/admin/v1/audit?{q}")
        assert status == 200, body
        events += body["data"]
        if len(body["data"]) < 1000:
            return events
        after = body["last_seq"]


# MARK: roles and policies

APP_OPERATIONS = [("post", "/v1/chat/completions"), ("get", "/v1/chat/completions"), ("get", "/v1/chat/completions/{id}"),
                  ("post", "/v1/messages"), ("post", "/v1/embeddings"), ("get", "/v1/models"), ("get", "/v1/keyward/export"),
                  ("get", "/v1/responses")]


def test_a_list_cursor_that_names_no_record_is_refused(gateway):
    token = gateway.new_tenant("cursor")
    for path, cursor in [("/v1/chat/completions", "chatcmpl-nosuch"), ("/v1/responses", "resp_nosuch"), ("/v1/files", "file-nosuch")]:
        status, body, _ = gateway.request("GET", f"{path}?after={cursor}", token=token)
        assert status == 400 and body["error"]["code"] == "invalid_cursor", (path, body)
        assert cursor in body["error"]["message"], (path, body)
        status, body, _ = gateway.request("GET", path, token=token)
        assert status == 200 and body["data"] == [] and body["has_more"] is False, (path, body)


def test_openapi_document_is_valid_and_matches_the_router(gateway):
    from openapi_spec_validator import validate
    status, doc, _ = gateway.request("GET", "/admin/v1/openapi.json")
    assert status == 200
    validate(doc)  # raises on an invalid OpenAPI 3.1 document
    ops = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert len(ops) == 28
    # Every documented operation exists: an unknown route would be 404 for every token, and an
    # undocumented one is caught by the role matrix below, which walks this document.
    for method, path in ops:
        concrete = path.replace("{ref}", ref("local:nosuch")).replace("{name}", "nosuch").replace("{id}", "nosuch") \
                       .replace("{upstream}", "nosuch")
        status, body, _ = gateway.request(method.upper(), concrete, {}, token=gateway.admin_token)
        assert not (status == 404 and body["error"]["message"] == "Not Found"), (method, path)


def test_every_role_is_refused_every_operation_of_the_others_and_each_refusal_is_audited(gateway):
    tokens = {"admin": gateway.admin_token, "key-admin": gateway.role_token("key-admin"),
              "auditor": gateway.role_token("auditor"), "app": gateway.new_tenant("roles")}
    _, doc, _ = gateway.request("GET", "/admin/v1/openapi.json")
    # An operation's tags are the roles that may call it (the session and dashboard: all four).
    ops = [(m, p, set(op["tags"])) for p, item in doc["paths"].items() for m, op in item.items()]
    assert sum(len(roles) == 4 for _, _, roles in ops) == 2
    ops += [(m, p, {"app"}) for m, p in APP_OPERATIONS]
    def role_refusals():
        return [e for e in audit(gateway, operation="access") if "needs role" in e.get("detail", "")]
    before = len(role_refusals())
    refused = 0
    for method, path, role in ops:
        concrete = path.replace("{ref}", ref("local:nosuch")).replace("{name}", "nosuch").replace("{id}", "tok_nosuch") \
                       .replace("{upstream}", "nosuch")
        for r, token in tokens.items():
            status, body, _ = gateway.request(method.upper(), concrete, {}, token=token)
            code = body["error"]["code"] if isinstance(body, dict) and "error" in body else None
            if r in role:
                assert code != "permission_denied", (r, method, path, body)
            else:
                assert status == 403 and code == "permission_denied", (r, method, path, status, body)
                refused += 1
        # No token at all: 401, never the operation.
        assert gateway.request(method.upper(), concrete, {})[0] == 401
    events = role_refusals()
    assert refused == sum(4 - len(roles) for _, _, roles in ops)
    assert len(events) - before == refused
    assert all(e["result"] == "denied" and e["actor"].startswith("tok_") for e in events[before:])


def test_key_policy_grants_by_purpose_model_and_token(gateway, upstream):
    token = gateway.new_tenant("pol")
    reader, reader_id = gateway.app_token("pol")
    c = gateway.openai(token)
    stored = chat(c, "granted by default")
    # The default: the tenant's own tokens may infer and read back; nobody may export.
    status, policy, _ = gateway.admin("GET", f"/admin/v1/keys/{ref('local:pol')}/policy")
    assert status == 200 and policy == {"grants": [{"principals": ["tenant:pol"], "purposes": ["inference", "retrieval"]}]}
    with pytest.raises(urllib.error.HTTPError) as e:
        gateway.export(token)
    assert e.value.code == 403

    # Inference on mock-* models only, for every token; retrieval and export for one token.
    status, body, _ = gateway.admin("PUT", f"/admin/v1/keys/{ref('local:pol')}/policy", {"grants": [
        {"principals": ["tenant:pol"], "purposes": ["inference"], "models": ["mock-*"]},
        {"principals": [f"token:{reader_id}"], "purposes": ["retrieval", "export"]},
    ]})
    assert status == 200, body
    before = upstream.count
    with pytest.raises(openai.PermissionDeniedError) as e:
        chat(c, "echo is not granted")
    assert e.value.code == "access_denied"
    assert chat(c, "mock is granted", model="mock-1").choices[0].message.content
    assert upstream.count == before + 1
    with pytest.raises(openai.PermissionDeniedError) as e:
        c.chat.completions.retrieve(stored.id)
    assert e.value.code == "access_denied"
    r = gateway.openai(reader)
    assert r.chat.completions.retrieve(stored.id).choices[0].message.content == "granted by default"
    with pytest.raises(openai.PermissionDeniedError):
        chat(r, "the reader may infer only on mock models", model="keyward/echo")
    records, end = gateway.export(reader)
    assert end == {"object": "export.end", "records": 4}
    assert {x["kind"] for x in records} == {"chat.request", "chat.response"}
    assert any(x["content"].get("messages", [{}])[0].get("content") == "granted by default" for x in records)

    denied = [e for e in audit(gateway, tenant="pol", operation="access") if e["result"] == "denied"]
    assert {e.get("purpose") for e in denied} >= {"inference", "retrieval", "export"}
    assert any(e.get("detail") == "model=keyward/echo" for e in denied)
    # Bad documents are refused with a reason.
    status, body, _ = gateway.admin("PUT", f"/admin/v1/keys/{ref('local:pol')}/policy",
                                    {"grants": [{"principals": ["everyone"], "purposes": ["inference"]}]})
    assert status == 400 and body["error"]["code"] == "invalid_policy"
    changes = audit(gateway, operation="policy_change", key="local:pol")
    assert len(changes) == 2  # at tenant creation, and the PUT above; not the refused one


# MARK: the audit log

def canonical(seq, t, fields):
    """The chain's canonical event encoding, written from its description (docs/audit.md)."""
    out = b"KWA1" + struct.pack(">QQ", seq, t & 0xFFFFFFFFFFFFFFFF)
    for f in fields:
        if f is None:
            out += b"\xff"
        else:
            b = f.encode()
            out += b"\x00" + struct.pack(">Q", len(b)) + b
    return out


FIELDS = "actor, tenant, key, operation, purpose, request_id, record, result, detail"


def test_audit_verify_finds_every_kind_of_tampering(fresh_gateway, tmp_path):
    g = fresh_gateway()
    c = g.openai(g.new_tenant("aud"))
    ids = [chat(c, f"message {i}").id for i in range(20)]
    for i in ids[:10]:
        c.chat.completions.retrieve(i)
    assert g.stop() == 0  # the shutdown checkpoint signs the head

    def verify(data):
        p = subprocess.run([keyward_bin(), "audit", "verify", "--data", data], capture_output=True, text=True)
        return p.returncode, p.stdout + p.stderr

    rc, out = verify(g.data)
    assert rc == 0, out
    db = sqlite3.connect(f"{g.data}/keyward.sqlite3")
    n = db.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    assert db.execute("SELECT max(seq) FROM audit_checkpoints").fetchone()[0] == n
    db.close()
    assert f"intact: {n} events" in out and f"signed through event {n}" in out
    mid = n // 2

    def tampered(name, edit):
        copy = str(tmp_path / name)
        shutil.copytree(g.data, copy)
        db = sqlite3.connect(f"{copy}/keyward.sqlite3")
        with db:
            edit(db)
        db.close()
        return verify(copy)

    def forge(db):
        # Make room, then insert a well-formed event with a correct hash after event `mid`.
        db.execute("UPDATE audit_events SET seq = -seq WHERE seq > ?", (mid,))
        db.execute("UPDATE audit_events SET seq = 1 - seq WHERE seq < 0")
        prev = db.execute("SELECT hash FROM audit_events WHERE seq = ?", (mid,)).fetchone()[0]
        fields = ["tok_forged", "aud", "local:aud", "decrypt_record", "retrieval", None, "chatcmpl-x/chat.response", "ok", None]
        h = hashlib.sha256(prev + canonical(mid + 1, 1, fields)).digest()
        db.execute(f"INSERT INTO audit_events(seq, time, {FIELDS}, prev_hash, hash) VALUES (?, 1, {', '.join('?' * 9)}, ?, ?)",
                   (mid + 1, *fields, prev, h))

    def swap(db):
        cols = f"time, {FIELDS}, prev_hash, hash"
        a = db.execute(f"SELECT {cols} FROM audit_events WHERE seq = ?", (mid,)).fetchone()
        b = db.execute(f"SELECT {cols} FROM audit_events WHERE seq = ?", (mid + 1,)).fetchone()
        sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
        db.execute(f"UPDATE audit_events SET {sets} WHERE seq = ?", (*b, mid))
        db.execute(f"UPDATE audit_events SET {sets} WHERE seq = ?", (*a, mid + 1))

    cases = {
        "edit": (lambda db: db.execute("UPDATE audit_events SET actor = 'tok_someone_else' WHERE seq = ?", (mid,)), mid),
        "delete": (lambda db: db.execute("DELETE FROM audit_events WHERE seq = ?", (mid,)), mid),
        # The forged event itself is well formed; the chain breaks at the event after it.
        "insert": (forge, mid + 2),
        "swap": (swap, mid),
        "truncate": (lambda db: db.execute("DELETE FROM audit_events WHERE seq > ?", (n - 3,)), n - 2),
    }
    for name, (edit, position) in cases.items():
        rc, out = tampered(name, edit)
        assert rc == 1, (name, out)
        assert f"broken at event {position}:" in out, (name, out)
    # A checkpoint signed by another key is not trusted.
    rc, out = tampered("resign", lambda db: db.execute("UPDATE audit_checkpoints SET public_key = zeroblob(32)"))
    assert rc == 1 and "not signed by a trusted audit key" in out


def audit_writes(db, refused):
    """Makes the audit table refuse every insert, as a full or read-only disk would, or accept them again."""
    with db:
        db.execute("CREATE TRIGGER audit_down BEFORE INSERT ON audit_events BEGIN SELECT RAISE(FAIL, 'disk full'); END"
                   if refused else "DROP TRIGGER audit_down")


def wait_resumed(g):
    """Waits for the gateway to notice by itself that the audit log can be written (it retries each second)."""
    deadline = time.time() + 10
    while g.request("GET", "/readyz")[0] != 200:
        assert time.time() < deadline, "the gateway did not resume after the audit log recovered"
        time.sleep(0.2)


def test_when_the_audit_log_cannot_be_written_key_operations_are_refused(fresh_gateway, upstream):
    g = fresh_gateway()
    c = g.openai(g.new_tenant("fc"))
    old = chat(c, "before the outage")
    g.role_token("key-admin")  # issuing a token is audited too: do it before the outage
    db = sqlite3.connect(f"{g.data}/keyward.sqlite3", timeout=10)
    records = db.execute("SELECT count(*) FROM records").fetchone()[0]
    audit_writes(db, refused=True)
    # The first exchange finds out when it stores: refused, nothing kept, nothing returned.
    with pytest.raises(openai.InternalServerError) as e:
        chat(c, "during the outage")
    assert e.value.status_code == 503 and e.value.code == "audit_unavailable"
    # From then on, nothing reaches the upstream, nothing is read, no key operation runs.
    before = upstream.count
    with pytest.raises(openai.InternalServerError) as e:
        chat(c, "during the outage", model="mock-1")
    assert e.value.code == "audit_unavailable"
    assert upstream.count == before
    with pytest.raises(openai.InternalServerError) as e:
        c.chat.completions.retrieve(old.id)
    assert e.value.code == "audit_unavailable"
    status, body, _ = g.as_role("key-admin", "POST", f"/admin/v1/keys/{ref('local:fc')}/rotate")
    assert status == 503 and body["error"]["code"] == "audit_unavailable"
    assert g.request("GET", "/readyz")[0] == 503
    assert db.execute("SELECT count(*) FROM records").fetchone()[0] == records
    # The store recovers: the gateway notices by itself (it retries each second).
    audit_writes(db, refused=False)
    wait_resumed(g)
    assert c.chat.completions.retrieve(chat(c, "after").id).choices[0].message.content == "after"
    db.close()
    assert g.stop() == 0
    p = subprocess.run([keyward_bin(), "audit", "verify", "--data", g.data], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert any(e == "audit_resumed" for e in [r[0] for r in sqlite3.connect(f"{g.data}/keyward.sqlite3").execute(
        "SELECT operation FROM audit_events")])


def test_a_streamed_answer_that_cannot_be_stored_does_not_end_as_if_it_were(fresh_gateway, upstream):
    """The answer's events go out as they come; when its record and audit event cannot be written,
    the final event ([DONE], message_stop) is replaced by an error event, which the SDKs raise."""
    import anthropic
    g = fresh_gateway()
    token = g.new_tenant("streamer", store="always")
    c = g.openai(token)
    chat(c, "the data key, unwrapped and audited before the outage", model="mock-1")
    db = sqlite3.connect(f"{g.data}/keyward.sqlite3", timeout=10)
    audit_writes(db, refused=True)
    pieces, ids = [], set()
    with pytest.raises(openai.APIError) as e:
        for chunk in c.chat.completions.create(model="mock-1", stream=True, messages=[{"role": "user", "content": "one two three"}]):
            ids.add(chunk.id)
            pieces += [choice.delta.content or "" for choice in chunk.choices]
    assert "could not be stored" in str(e.value), e.value
    assert "".join(pieces) == "echo: one two three"  # every event of the answer but its end
    # The audit log is down now: Anthropic's stream is refused before it starts, so it is tried
    # after the recovery with the table refusing again from the first event on.
    audit_writes(db, refused=False)
    wait_resumed(g)
    chat(c, "before the second outage", model="mock-1")
    records = db.execute("SELECT count(*) FROM records").fetchone()[0]
    audit_writes(db, refused=True)
    client = anthropic.Anthropic(base_url=g.url, api_key=token, max_retries=0)
    with pytest.raises(anthropic.APIError) as e:
        with client.messages.stream(model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "un deux"}]) as stream:
            "".join(stream.text_stream)
    assert "could not be stored" in str(e.value), e.value
    # Nothing of either answer was kept.
    assert db.execute("SELECT count(*) FROM records").fetchone()[0] == records
    assert ids and not any(db.execute("SELECT 1 FROM records WHERE id = ?", (i,)).fetchone() for i in ids)
    audit_writes(db, refused=False)
    db.close()


def test_audit_events_name_who_did_what_and_never_hold_secrets(gateway):
    token = gateway.new_tenant("who")
    c = gateway.openai(token)
    r = chat(c, "a secret prompt CANARY-AUDIT")
    c.chat.completions.retrieve(r.id)
    events = audit(gateway, tenant="who")
    ops = [e["operation"] for e in events]
    assert "encrypt_record" in ops and "decrypt_record" in ops and "tenant_create" in ops
    read = [e for e in events if e["operation"] == "decrypt_record"][-1]
    assert read["actor"].startswith("tok_") and read["purpose"] == "retrieval" and read["key"] == "local:who"
    assert read["record"] == f"{r.id}/chat.response" and read.get("request_id")
    text = json.dumps(audit(gateway))
    assert "CANARY-AUDIT" not in text and token not in text and gateway.admin_token not in text
    # keyward audit export / tail read the same events.
    env = {**os.environ, "KEYWARD_ADMIN_TOKEN": gateway.role_token("auditor")}
    p = subprocess.run([keyward_bin(), "audit", "export", "--format", "jsonl", "--tenant", "who", "--url", gateway.url],
                       env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    exported = [json.loads(line) for line in p.stdout.splitlines()]
    assert [e["seq"] for e in exported] == [e["seq"] for e in events[:len(exported)]]
    p = subprocess.run([keyward_bin(), "audit", "tail", "--lines", "3", "--url", gateway.url], env=env, capture_output=True, text=True)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 3, p.stderr


# MARK: alerts

class Webhook:
    def __init__(self):
        self.posts = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                hook.posts.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"


def test_a_burst_of_retrievals_raises_exactly_one_alert_and_suspends_the_token(fresh_gateway):
    hook = Webhook()  # our own receiver: the "test webhook" the issue asks for
    g = fresh_gateway(config_extra={"alerts": {"window_seconds": 60, "minimum": 30, "ratio": 5, "ceiling": 100000,
                                               "baseline_windows": 5, "webhook": hook.url, "suspend_token": True}})
    g.new_tenant("burst")
    token, token_id = g.app_token("burst")
    calm = g.openai(g.new_tenant("calm"))
    c = g.openai(token)
    r = chat(c, "read me many times")
    with pytest.raises(openai.PermissionDeniedError) as e:
        for _ in range(100):
            c.chat.completions.retrieve(r.id)
    assert e.value.code == "token_suspended"
    deadline = time.time() + 10
    while not hook.posts and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(2)  # any second alert would arrive meanwhile
    assert len(hook.posts) == 1, hook.posts
    alert = hook.posts[0]
    assert alert["type"] == "keyward.alert"
    assert alert["principal"] == token_id and alert["tenant"] == "burst" and alert["reason"] == "baseline"
    assert set(alert["subjects"]) == {f"principal:{token_id}", "key:local:burst"}
    alerts = audit(g, operation="alert")
    assert len(alerts) == 1 and alerts[0]["actor"] == token_id and alerts[0]["result"] == "token_suspended"
    status, metrics, _ = g.request("GET", "/metrics")
    assert 'keyward_alerts_total{reason="baseline"} 1' in metrics.decode()
    chat(calm, "others are unaffected")
    status, body, _ = g.admin("POST", f"/admin/v1/tokens/{token_id}/resume")
    assert status == 200
    assert c.chat.completions.retrieve(r.id).id == r.id
    # Revocation is announced on the same webhook.
    status, _, _ = g.as_role("key-admin", "POST", f"/admin/v1/keys/{ref('local:calm')}/disable")
    assert status == 200
    deadline = time.time() + 10
    while len(hook.posts) < 2 and time.time() < deadline:
        time.sleep(0.1)
    event = hook.posts[1]
    assert event["type"] == "keyward.key_event" and event["operation"] == "disable"
    assert event["key"] == "local:calm" and event["tenants"] == ["calm"] and event["actor"].startswith("tok_")


# MARK: key life cycle through the API

def test_rotate_disable_enable_and_deletion_are_recorded(gateway):
    c = gateway.openai(gateway.new_tenant("life"))
    old = chat(c, "before rotation")
    status, key, _ = gateway.as_role("key-admin", "POST", f"/admin/v1/keys/{ref('local:life')}/rotate")
    assert status == 200 and key["versions"] == 2 and key["state"] == "enabled"
    new = chat(c, "after rotation")
    assert c.chat.completions.retrieve(old.id).choices[0].message.content == "before rotation"
    assert c.chat.completions.retrieve(new.id).choices[0].message.content == "after rotation"
    status, key, _ = gateway.as_role("key-admin", "POST", f"/admin/v1/keys/{ref('local:life')}/schedule-deletion", {"days": 7})
    assert status == 200 and key["state"] == "pending-deletion" and key["deletion_date"] > time.time() + 6.9 * 86400
    with pytest.raises(openai.PermissionDeniedError) as e:
        c.chat.completions.retrieve(old.id)
    assert e.value.code == "key_revoked"
    status, key, _ = gateway.as_role("key-admin", "POST", f"/admin/v1/keys/{ref('local:life')}/cancel-deletion")
    assert status == 200 and key["state"] == "disabled"
    status, key, _ = gateway.as_role("key-admin", "POST", f"/admin/v1/keys/{ref('local:life')}/enable")
    assert status == 200 and key["state"] == "enabled"
    assert c.chat.completions.retrieve(old.id).id == old.id
    status, key, _ = gateway.as_role("key-admin", "GET", f"/admin/v1/keys/{ref('local:life')}")
    assert key["tenants"] == ["life"]
    ops = [(e["operation"], e["result"]) for e in audit(gateway, key="local:life")]
    for op in ["rotate", "schedule_deletion", "cancel_deletion", "enable"]:
        assert (op, "ok") in ops
    assert ("unwrap", "error:key_pending_deletion") in ops
    # The CLI drives the same API.
    env = {**os.environ, "KEYWARD_ADMIN_TOKEN": gateway.role_token("key-admin")}
    for args in (["rotate", "local:life"], ["schedule-deletion", "local:life", "--days", "30"], ["cancel-deletion", "local:life"],
                 ["enable", "local:life"]):
        p = subprocess.run([keyward_bin(), "keys", *args, "--url", gateway.url], env=env, capture_output=True, text=True)
        assert p.returncode == 0, (args, p.stderr)
    status, key, _ = gateway.as_role("key-admin", "GET", f"/admin/v1/keys/{ref('local:life')}")
    assert key["versions"] == 3 and key["state"] == "enabled"
