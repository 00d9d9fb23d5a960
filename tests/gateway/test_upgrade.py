"""Upgrade: what release 3f1b562 left on disk and in PostgreSQL opens and serves with the binary
under test (KEYWARD_BIN).

tests/fixtures/release-3f1b562/ was made by tests/fixtures/make-fixtures with that release's own
binary: a whole SQLite data folder (database, local key store, audit signing key) and a pg_dump of
the same scenario on PostgreSQL, with tokens.json recording the tokens, record ids and every
answer the old binary gave. Each test serves a copy and checks that the new binary reads it all
back exactly (tenants, tokens and their roles and suspension, key policies, key versions, the
tenant's provider key, stored completions and their messages, listings, the export, the re-key
job), can add to it (a completion, a rotation and a re-key that rewrites the old records'
headers) and that `keyward audit verify` walks the old and new events in one chain, under the
key the old binary made. A renamed column, a changed row codec, record header or key-file format
or a lost migration fails here.
"""
import hashlib
import json
import os
import re
import shutil
import sqlite3
import signal
import subprocess
import urllib.parse
import uuid

import openai
import pytest

from keyward_paths import keyward_bin

FIXTURE = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "fixtures", "release-3f1b562"))
with open(os.path.join(FIXTURE, "tokens.json")) as _f:
    MANIFEST = json.load(_f)
SERVER = os.environ.get("KEYWARD_TEST_DATABASE_URL")


def ref(key):
    return urllib.parse.quote(key, safe="")


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def psql(url, *args):
    out = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qAt", *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def audit_verify(*args):
    """`keyward audit verify ARGS`: (events, signed through)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}  # no KEYWARD_DATABASE_URL
    out = subprocess.run([keyward_bin(), "audit", "verify", *args], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"audit log intact: (\d+) events, signed through event (\d+)", out.stdout)
    assert m, out.stdout
    return int(m.group(1)), int(m.group(2))


def intact(line):
    m = re.search(r"intact: (\d+) events, signed through event (\d+)", line)
    return int(m.group(1)), int(m.group(2))


class Upgraded:
    """A gateway of the binary under test (conftest's fresh_gateway), serving a backend's fixture
    data: for SQLite, the data folder is copied into the test's first gateway folder before it starts."""

    def __init__(self, backend, upstream, fresh_gateway, tmp_path, extra_env=None):
        self.m = MANIFEST[backend]
        # The provider key is the fixture's: the mock upstream must accept it to answer.
        for p in self.m["provider_keys"]:
            with upstream.state.lock:
                upstream.state.api_keys.add(p["api_key"])
        self.upstream = upstream
        self.g = fresh_gateway(extra_env=extra_env)
        assert self.g.data == str(tmp_path / "gw0" / "data"), self.g.data
        self.g.admin_token = self.m["admin_token"]  # installed by the old binary; the new one is ignored
        self.g._role_tokens = {"key-admin": self.token("key_admin"), "auditor": self.token("auditor")}

    def token(self, name):
        return self.m["tokens"][name]["token"]

    def as_(self, name, method, path, body=None):
        return self.g.request(method, path, body, token=self.token(name))

    def client(self, name):
        return self.g.openai(self.token(name))


def check_serves(u):
    """Everything the old binary stored reads back exactly, and the new binary adds to it."""
    g, m = u.g, u.m
    status, ready, _ = g.request("GET", "/readyz")
    assert status == 200 and ready["status"] == "ready", ready
    assert ready["checks"]["database"] == "ok" and ready["checks"]["keystore:local"] == "ok", ready

    # Tenants (name, key, store policy, retention, creation time) as the old binary listed them,
    # with the settings added since at their defaults.
    status, body, _ = g.admin("GET", "/admin/v1/tenants")
    assert status == 200, body
    assert body["data"] == [{**t, "encrypted_requests": "allowed", "rate_limits": {}} for t in m["tenants"]]

    # Tokens: each authenticates as its role; the suspended one is still suspended, the deleted one gone.
    for name in ("acme_app", "acme_exporter", "globex_app"):
        status, body, _ = u.as_(name, "GET", "/v1/chat/completions?limit=1")
        assert status == 200, (name, body)
        status, body, _ = u.as_(name, "GET", "/admin/v1/tenants")
        assert status == 403 and body["error"]["code"] == "permission_denied", (name, body)
    status, body, _ = u.as_("globex_suspended", "GET", "/v1/chat/completions")
    assert status == 403 and body["error"]["code"] == "token_suspended", body
    status, body, _ = u.as_("acme_deleted", "GET", "/v1/chat/completions")
    assert status == 401, body
    job = m["jobs"][0]
    status, body, _ = u.as_("key_admin", "GET", f"/admin/v1/jobs/{job['id']}")
    assert status == 200 and body == job, body  # the re-key job, with its counts and timings
    status, body, _ = u.as_("auditor", "GET", "/admin/v1/audit?limit=1")
    assert status == 200, body
    assert body["head_seq"] > m["audit"]["head_seq"], body  # the old chain, plus this start's events
    status, body, _ = u.as_("key_admin", "GET", "/admin/v1/tenants")
    assert status == 403, body

    # Key policies and key states (versions: created, then rotated once).
    for key, policy in m["policies"].items():
        status, body, _ = g.admin("GET", f"/admin/v1/keys/{ref(key)}/policy")
        assert status == 200 and body == policy, (key, body)
        status, body, _ = u.as_("key_admin", "GET", f"/admin/v1/keys/{ref(key)}")
        # As recorded, with the field added since (the key's store).
        assert status == 200 and body == {**m["keys"][key], "store": key.split(":")[0]}, (key, body)

    # Every stored completion and its messages, through the official SDK, exactly as recorded.
    for c in m["completions"]:
        client = u.client(c["token"])
        got = client.chat.completions.retrieve(c["id"])
        assert got.id == c["id"] and got.choices[0].message.content == c["answer"], c["id"]
        raw = client.chat.completions.with_raw_response.retrieve(c["id"]).http_response.json()
        assert raw == c["stored_completion"], c["id"]
        msgs = client.chat.completions.messages.list(c["id"], limit=100)
        assert [(x.role, x.content) for x in msgs.data] == [(x["role"], x["content"]) for x in c["request"]["messages"]]
        assert [x.id for x in msgs.data] == [f"{c['id']}-{i}" for i in range(len(c["request"]["messages"]))]
        status, body, _ = u.as_(c["token"], "GET", f"/v1/chat/completions/{c['id']}/messages?limit=100")
        assert status == 200 and body == c["messages"], c["id"]
    # The echo model answered with the last user message, streamed or not.
    for c in m["completions"]:
        assert c["answer"] == [x for x in c["request"]["messages"] if x["role"] == "user"][-1]["content"]
    assert {c["note"] for c in m["completions"]} >= {"streamed", "on-request, streamed", "after rotation", "after re-key"}
    for d in m["deleted"] + m["not_stored"]:
        with pytest.raises(openai.NotFoundError):
            u.client(d["token"]).chat.completions.retrieve(d["id"])
    # Another tenant's record is not found either.
    globex_id = next(c["id"] for c in m["completions"] if c["tenant"] == "globex")
    with pytest.raises(openai.NotFoundError):
        u.client("acme_app").chat.completions.retrieve(globex_id)

    # Listings: same records, same order, also a page of two at a time (the SDK follows the pages).
    for tenant, token in (("acme", "acme_app"), ("globex", "globex_app")):
        client = u.client(token)
        assert [x.id for x in client.chat.completions.list(limit=100).data] == m["lists"][tenant]
        assert [x.id for x in client.chat.completions.list(limit=2)] == m["lists"][tenant]
    assert set(m["lists"]["acme"]) == {c["id"] for c in m["completions"] if c["tenant"] == "acme"}

    # The export (every record kind, Anthropic exchanges included, decrypted) is the old one, line by line.
    records, end = g.export(u.token("acme_exporter"))
    assert records + [end] == m["export"]["acme"]
    assert {r["kind"] for r in records} == {"chat.request", "chat.response", "messages.request", "messages.response"}
    assert [r["content"] for r in records if r["id"] == m["anthropic"][0]["id"] and r["kind"] == "messages.response"] \
        == [m["anthropic"][0]["response"]]
    status, body, _ = u.as_("acme_app", "GET", "/v1/keyward/export")
    assert status == 403 and body["error"]["code"] == "access_denied", body  # export is granted to one token only

    # globex's policy grants inference on keyward/echo only: a mock model is refused before the upstream.
    before = u.upstream.count
    with pytest.raises(openai.PermissionDeniedError) as e:
        u.client("globex_app").chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "no"}])
    assert e.value.code == "access_denied" and u.upstream.count == before

    # acme's provider key, sealed by the old binary, is what the upstream receives.
    p = m["provider_keys"][0]
    r = u.client("acme_app").chat.completions.create(model=p["model"], messages=[{"role": "user", "content": "via mock"}])
    assert r.choices[0].message.content == "echo: via mock"
    assert u.upstream.keys_seen()[-1] == "Bearer " + p["api_key"]

    # New records beside the old ones: stored, read back, listed after them.
    client = u.client("acme_app")
    new = client.chat.completions.create(model="keyward/echo", messages=[{"role": "user", "content": "written by the new binary"}])
    streamed = "".join(x.choices[0].delta.content or "" for x in client.chat.completions.create(
        model="keyward/echo", stream=True, messages=[{"role": "user", "content": "streamed by the new binary"}]) if x.choices)
    assert streamed == "streamed by the new binary"
    assert client.chat.completions.retrieve(new.id).choices[0].message.content == "written by the new binary"
    listed = [x.id for x in client.chat.completions.list(limit=100)]
    assert listed[:len(m["lists"]["acme"])] == m["lists"]["acme"] and new.id in listed[len(m["lists"]["acme"]):]
    assert len(listed) == len(m["lists"]["acme"]) + 3  # with the exchange through the mock upstream
    r = u.client("globex_app").chat.completions.create(model="keyward/echo", store=True,
                                                       messages=[{"role": "user", "content": "globex, new"}])
    assert u.client("globex_app").chat.completions.retrieve(r.id).choices[0].message.content == "globex, new"

    # The key life cycle on old data: rotate again and re-key, which rewrites every old header
    # (made by the old binary) with a data key re-wrapped under the new version.
    versions = m["keys"]["local:acme"]["versions"]
    status, body, _ = u.as_("key_admin", "POST", f"/admin/v1/keys/{ref('local:acme')}/rotate")
    assert status == 200 and body["versions"] == versions + 1, body
    status, body, _ = u.as_("key_admin", "POST", "/admin/v1/tenants/acme/rekey", {"key": "local:acme"})
    assert status == 202, body
    done = g.wait_job(body["job"], timeout=60)
    assert done["status"] == "done" and done["records_processed"] == done["records_total"], done
    # acme's old records (the exported ones and the provider key) and the 3 new exchanges' 6.
    old_acme = len(m["export"]["acme"]) - 1 + len(m["provider_keys"])
    assert done["records_total"] == old_acme + 6 and done["records_rewrapped"] == done["records_total"], done
    for c in m["completions"]:
        got = u.as_(c["token"], "GET", f"/v1/chat/completions/{c['id']}")
        assert got[0] == 200 and got[1] == c["stored_completion"], c["id"]
    r = u.client("acme_app").chat.completions.create(model=p["model"], messages=[{"role": "user", "content": "again"}])
    assert u.upstream.keys_seen()[-1] == "Bearer " + p["api_key"]  # the provider key was re-wrapped too

    # The audit chain carries the old operations and the new ones.
    status, body, _ = u.as_("auditor", "GET", "/admin/v1/audit?limit=1000")
    assert status == 200, body
    operations = {e["operation"] for e in body["data"]}
    assert operations >= set(m["audit"]["operations"]) | {"rotate", "rekey_start", "rewrap", "encrypt_record"}
    assert [e["seq"] for e in body["data"]] == list(range(1, len(body["data"]) + 1))
    head = body["head_seq"]
    assert g.stop() == 0
    return head


def test_the_sqlite_data_folder_of_release_3f1b562_opens_and_serves(upstream, fresh_gateway, tmp_path):
    m = MANIFEST["sqlite"]
    data = str(tmp_path / "gw0" / "data")  # where fresh_gateway's first gateway keeps its data
    shutil.copytree(os.path.join(FIXTURE, "sqlite"), data)
    os.chmod(data, 0o700)
    for root, dirs, files in os.walk(data):  # as the old binary left them (git keeps no modes)
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o700)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644 if f.endswith(".pub") else 0o600)
    assert not any(f.endswith(("-wal", "-shm")) for f in os.listdir(data))
    kept = ["audit-signing.key", "audit-signing.pub", "keys/root.key", "keys/keystore.json"]
    before = {f: digest(os.path.join(data, f)) for f in kept}

    # The old binary's own verify of the folder, as recorded: the fixture is whole before we start.
    old_events, old_signed = intact(m["audit"]["verify"])
    assert audit_verify("--data", data) == (old_events, old_signed)
    assert old_signed == old_events

    u = Upgraded("sqlite", upstream, fresh_gateway, tmp_path)
    head = check_serves(u)

    # The signing key, root key and key store header are the old ones, untouched.
    assert {f: digest(os.path.join(data, f)) for f in kept} == before
    # The schema was brought to the one every engine shares (the tables the old folder lacked).
    db = sqlite3.connect(os.path.join(data, "keyward.sqlite3"))
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] > 4
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"settings", "local_keys"} <= tables
    finally:
        db.close()
    # One chain, old and new events, every checkpoint (the old binary's and the new one's at
    # shutdown) verified under the key the old binary made, given from the pristine fixture copy.
    events, signed = audit_verify("--data", data, "--public-key", os.path.join(FIXTURE, "sqlite", "audit-signing.pub"))
    assert events == signed == head and events > old_events
    assert audit_verify("--data", data) == (events, signed)


@pytest.mark.skipif(not SERVER, reason="KEYWARD_TEST_DATABASE_URL is not set (scripts/test starts PostgreSQL and sets it)")
def test_the_postgres_database_of_release_3f1b562_opens_and_serves(upstream, fresh_gateway, tmp_path):
    m = MANIFEST["postgres"]
    name = "keyward_it_upgrade_" + uuid.uuid4().hex[:10]
    psql(SERVER, "-c", f"CREATE DATABASE {name}")
    url = urllib.parse.urlunsplit(urllib.parse.urlsplit(SERVER)._replace(path="/" + name))
    u = None
    try:
        psql(url, "-f", os.path.join(FIXTURE, "postgres.sql"))
        root_key = str(tmp_path / "root.key")
        shutil.copyfile(os.path.join(FIXTURE, m["root_key_file"]), root_key)
        os.chmod(root_key, 0o600)
        pub = os.path.join(FIXTURE, m["audit_public_key_file"])
        old_events, old_signed = intact(m["audit"]["verify"])
        assert audit_verify("--database", url, "--public-key", pub) == (old_events, old_signed)
        assert old_signed == old_events
        key_rows = psql(url, "-c", "SELECT name FROM local_keys ORDER BY name")

        u = Upgraded("postgres", upstream, fresh_gateway, tmp_path,
                     extra_env={"KEYWARD_DATABASE_URL": url, "KEYWARD_ROOT_KEY_FILE": root_key})
        head = check_serves(u)

        # The audit signing key is still the one the old binary stored; no local key was lost or added.
        assert psql(url, "-c", "SELECT encode(value, 'hex') FROM settings WHERE name = 'audit-signing.pub'") \
            == open(pub).read().strip()
        assert psql(url, "-c", "SELECT name FROM local_keys ORDER BY name") == key_rows
        # The schema was brought to the one every engine shares: the old listing index replaced.
        assert int(psql(url, "-c", "SELECT version FROM keyward_schema")) > 1
        assert psql(url, "-c", "SELECT indexname FROM pg_indexes WHERE tablename = 'records' AND indexname LIKE 'records\\_%' "
                               "ORDER BY indexname").split() == ["records_by_time", "records_expiry", "records_pkey"]
        events, signed = audit_verify("--database", url, "--public-key", pub)
        assert events == signed == head and events > old_events
    finally:
        if u is not None and u.g.proc.poll() is None:
            u.g.stop(sig=signal.SIGKILL)
        psql(SERVER, "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_the_fixture_is_small_and_has_no_sqlite_log():
    total = 0
    for root, _, files in os.walk(FIXTURE):
        for f in files:
            assert not f.endswith(("-wal", "-shm", "-journal")), f
            total += os.path.getsize(os.path.join(root, f))
    assert total < 1 << 20, total
    for backend in ("sqlite", "postgres"):
        m = MANIFEST[backend]
        assert len(m["completions"]) >= 6 and m["jobs"][0]["status"] == "done"
        assert m["keys"]["local:acme"]["versions"] == 2
