"""Several `keyward serve` replicas on one PostgreSQL database (a throw-away cluster that the README
test command starts on loopback; KEYWARD_TEST_DATABASE_URL names it): records written through one
are read through another, a revocation reaches every replica within a second, a re-key job is
shared and survives a replica killed with SIGKILL, PostgreSQL restarts under load without losing an
acknowledged record, a replica cut off from the database for 10 s refuses in time and recovers, and
the audit chain written by all of them verifies as one."""
import contextlib
import os
import signal
import statistics
import subprocess
import threading
import time
import urllib.parse
import uuid

import pytest

from keyward_paths import bench_bin, keyward_bin

SERVER = os.environ.get("KEYWARD_TEST_DATABASE_URL")
pytestmark = pytest.mark.skipif(
    not SERVER, reason="KEYWARD_TEST_DATABASE_URL is not set (scripts/test starts PostgreSQL and sets it)")


def ref(key):
    return urllib.parse.quote(key, safe="")


def psql(url, sql):
    out = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def pg_ctl(*args):
    cmd = [os.path.join(os.environ["KEYWARD_PG_BIN"], "pg_ctl"), "-D", os.environ["KEYWARD_PG_DIR"], *args]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


class Cluster:
    """A fresh database, a root key file every replica is given, and replicas started on demand."""

    def __init__(self, tmp_path, make):
        self.name = "keyward_it_" + uuid.uuid4().hex[:12]
        psql(SERVER, f"CREATE DATABASE {self.name}")
        parts = urllib.parse.urlsplit(SERVER)
        self.url = urllib.parse.urlunsplit(parts._replace(path="/" + self.name))
        self.tmp = tmp_path
        self.root_key = str(tmp_path / "root.key")
        with open(self.root_key, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(self.root_key, 0o600)
        self.admin_token = "kw-admin-CANARY-" + uuid.uuid4().hex
        self.make = make
        self.replicas = []

    def env(self, root_key=None):
        return {"KEYWARD_DATABASE_URL": self.url, "KEYWARD_ROOT_KEY_FILE": root_key or self.root_key,
                "KEYWARD_ADMIN_TOKEN": self.admin_token}

    def replica(self, **kw):
        g = self.make(extra_env=self.env(), **kw)
        g.admin_token = self.admin_token
        self.replicas.append(g)
        return g

    def close(self):
        for g in self.replicas:  # the fixture kills them too; the database cannot be dropped before
            if g.proc.poll() is None:
                g.proc.kill()
                g.proc.wait(10)
        psql(SERVER, f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


@pytest.fixture
def cluster(tmp_path, fresh_gateway):
    c = Cluster(tmp_path, fresh_gateway)
    yield c
    c.close()


def chat(g, token, text):
    status, body, _ = g.request("POST", "/v1/chat/completions",
                                {"model": "keyward/echo", "messages": [{"role": "user", "content": text}]}, token=token)
    assert status == 200, body
    return body["id"]


def read(g, token, record_id):
    status, body, _ = g.request("GET", f"/v1/chat/completions/{record_id}", token=token)
    return status, body


def wait_until(predicate, timeout):
    """Seconds until `predicate()` held (polled as fast as it answers), or None after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
    return None


def test_records_written_through_one_replica_are_read_through_another_and_revocation_reaches_all_within_a_second(cluster):
    a, b, c = cluster.replica(), cluster.replica(), cluster.replica()
    token = a.new_tenant("acme")
    record_id = chat(a, token, "hello from a")
    for g in (b, c):
        status, body = read(g, token, record_id)
        assert status == 200 and body["choices"][0]["message"]["content"] == "hello from a", body
    # Written through b, read through a: the data key b cached is unwrapped by a from the database's key.
    other = chat(b, token, "hello from b")
    assert read(a, token, other)[0] == 200

    revoked, restored = [], []
    for trial in range(20):
        disabler, enabler = (a, b, c)[trial % 3], (a, b, c)[(trial + 1) % 3]
        for g in (a, b, c):
            assert read(g, token, record_id)[0] == 200  # every replica has the data key cached
        status, body, _ = disabler.as_role("key-admin", "POST", f"/admin/v1/keys/{ref('local:acme')}/disable")
        assert status == 200, body
        t0 = time.monotonic()
        others = [g for g in (a, b, c) if g is not disabler]
        took = [wait_until(lambda g=g: read(g, token, record_id)[0] == 403, 5) for g in others]
        assert None not in took, f"trial {trial}: a replica still served after 5 s: {took}"
        revoked.append(time.monotonic() - t0)
        status, body = read(others[0], token, record_id)
        assert body["error"]["code"] == "key_revoked", body
        status, body, _ = enabler.as_role("key-admin", "POST", f"/admin/v1/keys/{ref('local:acme')}/enable")
        assert status == 200, body
        t0 = time.monotonic()
        took = [wait_until(lambda g=g: read(g, token, record_id)[0] == 200, 5) for g in (a, b, c)]
        assert None not in took, f"trial {trial}: a replica still refused after 5 s: {took}"
        restored.append(time.monotonic() - t0)
    print(f"\nrevocation reached every other replica in: median {statistics.median(revoked) * 1000:.1f} ms, "
          f"worst {max(revoked) * 1000:.1f} ms over {len(revoked)} trials (3 replicas)")
    print(f"restoration reached every replica in: median {statistics.median(restored) * 1000:.1f} ms, "
          f"worst {max(restored) * 1000:.1f} ms")
    assert max(revoked) < 1.0 and max(restored) < 1.0


def test_a_policy_change_and_a_token_deletion_reach_the_other_replica(cluster):
    a, b = cluster.replica(), cluster.replica()
    token = a.new_tenant("acme")
    tok2, tok2_id = a.app_token("acme")
    record_id = chat(a, token, "x")
    assert read(b, tok2, record_id)[0] == 200  # b caches the principal and the policy
    # Token 2 may only infer now: reading back is refused on every replica.
    status, body, _ = a.admin("PUT", f"/admin/v1/keys/{ref('local:acme')}/policy", {"grants": [
        {"principals": [f"token:{tok2_id}"], "purposes": ["inference"]}]})
    assert status == 200, body
    assert wait_until(lambda: read(b, tok2, record_id)[0] == 403, 1.0) is not None
    status, body, _ = a.admin("DELETE", f"/admin/v1/tokens/{tok2_id}")
    assert status == 200, body
    assert wait_until(lambda: read(b, tok2, record_id)[0] == 401, 1.0) is not None


def test_a_wrong_root_key_is_refused_at_start_and_changes_nothing(cluster):
    a = cluster.replica()
    a.new_tenant("acme")
    before = psql(cluster.url, "SELECT string_agg(name || ':' || revision, ',' ORDER BY name) FROM local_keys")
    wrong = str(cluster.tmp / "wrong.key")
    with open(wrong, "wb") as f:
        f.write(os.urandom(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    env.update(cluster.env(root_key=wrong))
    out = subprocess.run([keyward_bin(), "serve", "--data", str(cluster.tmp / "wrong"), "--listen", "127.0.0.1:0"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "does not open this key store" in out.stderr, out.stderr
    assert psql(cluster.url, "SELECT string_agg(name || ':' || revision, ',' ORDER BY name) FROM local_keys") == before


def test_a_rekey_job_is_shared_and_survives_a_replica_killed_mid_batch(cluster):
    a, b = cluster.replica(), cluster.replica()
    a.new_tenant("big")
    exporter, exporter_id = a.app_token("big")
    a.new_tenant("big2")  # mints local:big2 in the shared key store
    for key in ("local:big", "local:big2"):
        status, body, _ = a.admin("PUT", f"/admin/v1/keys/{ref(key)}/policy", {"grants": [
            {"principals": ["tenant:big"], "purposes": ["inference", "retrieval"]},
            {"principals": [f"token:{exporter_id}"], "purposes": ["export"]}]})
        assert status == 200, body
    env = dict(os.environ, **cluster.env())
    t0 = time.monotonic()
    out = subprocess.run([bench_bin(), "seed", str(cluster.tmp / "seed"), "big", "20000"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    print(f"\nseeded 40,000 records in {time.monotonic() - t0:.1f} s")

    status, body, _ = a.as_role("key-admin", "POST", "/admin/v1/tenants/big/rekey", {"key": "local:big2"})
    assert status == 202, body
    job_id = body["job"]
    t0 = time.monotonic()
    deadline = time.time() + 120
    while True:
        _, job, _ = b.as_role("key-admin", "GET", f"/admin/v1/jobs/{job_id}")
        if job["records_processed"] >= 10_000:
            break
        assert job["status"] == "running" and time.time() < deadline, job
        time.sleep(0.01)
    a.stop(signal.SIGKILL)
    assert job["status"] == "running", ("the job ended before the kill", str(job))
    job = b.wait_job(job_id)
    elapsed = time.monotonic() - t0
    assert job["status"] == "done", job
    assert job["records_processed"] >= 40_000 and job["records_rewrapped"] >= 40_000, job
    print(f"\nre-key of {job['records_processed']} records by two replicas (one killed at 10,000): "
          f"{job['records_processed'] / elapsed:.0f} records/s wall clock, {job['data_keys_unwrapped']} data keys unwrapped")
    # The old key can go: nothing of the tenant's is under it any more.
    status, body, _ = b.as_role("key-admin", "POST", f"/admin/v1/keys/{ref('local:big')}/disable")
    assert status == 200, body
    records, end = b.export(exporter)
    assert end["object"] == "export.end" and len(records) >= 40_000
    assert all(r["content"] for r in records)


@pytest.mark.skipif(not os.environ.get("KEYWARD_PG_DIR"),
                    reason="restarts the server: needs the throw-away cluster of scripts/postgres-up")
def test_postgres_restarted_under_load_loses_no_acknowledged_record_and_service_resumes(cluster):
    a, b = cluster.replica(), cluster.replica()
    token = a.new_tenant("acme")
    acknowledged, lock, stop = [], threading.Lock(), threading.Event()
    errors = []

    def load(g, n):
        i = 0
        while not stop.is_set():
            i += 1
            try:
                status, body, _ = g.request("POST", "/v1/chat/completions", {
                    "model": "keyward/echo", "messages": [{"role": "user", "content": f"load {n}-{i}"}]}, token=token)
            except Exception as e:  # noqa: BLE001 - a refused connection is not an acknowledgement
                errors.append(repr(e))
                continue
            if status == 200:
                with lock:
                    acknowledged.append((body["id"], f"load {n}-{i}"))
            else:
                errors.append(status)
                assert status == 503, body  # fail closed: unavailable, never a wrong answer
                time.sleep(0.01)

    threads = [threading.Thread(target=load, args=(g, n), daemon=True) for n, g in enumerate((a, b, a, b))]
    for t in threads:
        t.start()
    time.sleep(1.0)
    pg_ctl("stop", "-m", "fast", "-w")
    down = time.monotonic()
    assert wait_until(lambda: a.request("GET", "/readyz")[0] == 503, 10) is not None
    time.sleep(1.0)
    pg_ctl("start", "-w", "-l", os.path.join(os.environ["KEYWARD_PG_DIR"], "server.log"))
    down_for = time.monotonic() - down
    before = len(acknowledged)
    resumed = wait_until(lambda: len(acknowledged) > before + 20, 30)
    stop.set()
    for t in threads:
        t.join(30)
    assert resumed is not None, f"service did not resume; errors: {errors[-5:]}"
    print(f"\nPostgreSQL down {down_for:.1f} s; service resumed "
          f"{resumed:.2f} s after it was back; {len(acknowledged)} acknowledged, {len(errors)} refused (503)")
    for g in (a, b):  # ready again by itself (the audit log and the change feed recover each second)
        assert wait_until(lambda g=g: g.request("GET", "/readyz")[0] == 200, 5) is not None
    for record_id, text in acknowledged:
        status, body = read(b, token, record_id)
        assert status == 200 and body["choices"][0]["message"]["content"] == text, (record_id, body)


def test_concurrent_audit_appends_from_every_replica_verify_as_one_chain(cluster):
    replicas = [cluster.replica(), cluster.replica(), cluster.replica()]
    token = replicas[0].new_tenant("acme")

    def work(g):
        for i in range(60):
            record_id = chat(g, token, f"audit {i}")
            assert read(g, token, record_id)[0] == 200

    threads = [threading.Thread(target=work, args=(g,)) for g in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for g in replicas:
        assert g.stop() == 0  # each signs a checkpoint at shutdown
    pub = str(cluster.tmp / "audit.pub")
    with open(pub, "w") as f:
        f.write(psql(cluster.url, "SELECT encode(value, 'hex') FROM settings WHERE name = 'audit-signing.pub'") + "\n")
    out = subprocess.run([keyward_bin(), "audit", "verify", "--database", cluster.url, "--public-key", pub],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    events = int(out.stdout.split("intact: ")[1].split()[0])
    assert events >= 3 * 60 * 2, out.stdout
    actors = psql(cluster.url, "SELECT count(DISTINCT request_id) FROM audit_events WHERE operation = 'encrypt_record'")
    assert int(actors) >= 180
    # One edited event breaks it, and verify names where.
    psql(cluster.url, "UPDATE audit_events SET result = 'denied' WHERE seq = 50")
    out = subprocess.run([keyward_bin(), "audit", "verify", "--database", cluster.url, "--public-key", pub],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "50" in out.stderr, out.stderr


def metric(g, name, **labels):
    status, text, _ = g.request("GET", "/metrics")
    text = text.decode() if isinstance(text, bytes) else str(text)
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_rate_limit_holds_across_replicas_within_what_one_sync_lets_through(cluster):
    """Each replica counts what it admits and, twice a second, writes its counts and reads the
    others' (rate_counts): requests spread over two replicas meet one limit of 10 a minute, where
    counted apart they would pass 20. How exact: a replica sees the other's requests up to about
    0.5 s late, so at the limit it may admit what the other admitted in that time (here 1-2), and
    a minute's boundary crossed during the 6 s may free one more."""
    limits = {"rate_limits": {"requests_per_minute": 10}}
    a, b = cluster.replica(config_extra=limits), cluster.replica(config_extra=limits)
    token = a.new_tenant("shared")
    admitted = []
    for i in range(24):
        g = (a, b)[i % 2]
        status, body, headers = g.request("POST", "/v1/chat/completions",
                                          {"model": "keyward/echo", "messages": [{"role": "user", "content": "hi"}]}, token=token)
        if status == 200:
            admitted.append(i)
        else:
            assert status == 429 and body["error"]["code"] == "rate_limited", body
        time.sleep(0.25)
    print(f"rate limit 10/min over two replicas: {len(admitted)} of 24 admitted ({admitted})")
    assert 10 <= len(admitted) <= 13, admitted
    # Each replica wrote its counts under its own name; the other's are added, not written over.
    time.sleep(1.2)  # two syncs: the last request's count is written
    rows = psql(cluster.url, "SELECT count(DISTINCT replica), sum(requests) FROM rate_counts WHERE scope = 'tenant:shared'")
    replicas, total = rows.split("|")
    assert replicas == "2" and int(total) == len(admitted), rows


def test_a_replica_that_lost_its_notifications_drops_its_caches_when_it_listens_again(cluster):
    a, b = cluster.replica(), cluster.replica()
    token = a.new_tenant("acme")
    record_id = chat(a, token, "x")
    assert read(b, token, record_id)[0] == 200
    assert read(b, token, record_id)[0] == 200
    calls = metric(b, "keyward_keystore_calls_total")
    listening = metric(b, "keyward_change_feed_events_total", event="listening")
    assert read(b, token, record_id)[0] == 200
    assert metric(b, "keyward_keystore_calls_total") == calls  # served from the data-key cache
    # Cut every replica's notification connection (as a network fault or a failover would).
    killed = psql(cluster.url, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND query LIKE 'LISTEN%'")
    assert int(killed) >= 2
    assert wait_until(lambda: metric(b, "keyward_change_feed_events_total", event="listening") > listening, 5) is not None
    assert metric(b, "keyward_change_feed_events_total", event="lost") >= 1
    # It missed whatever happened meanwhile, so it dropped every cache: the next read asks the key store.
    assert read(b, token, record_id)[0] == 200
    assert metric(b, "keyward_keystore_calls_total") > calls


@contextlib.contextmanager
def two_replicas_on_s3(cluster, bucket, batches):
    """Two replicas on the cluster's database sharing one bucket of a moto S3 server, with the
    given `batches` settings."""
    import sys
    import boto3
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop"))
    from kms_peers import Moto
    moto = Moto()
    try:
        s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto.url, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        s3.create_bucket(Bucket=bucket)
        extra = {"blobs": {"type": "s3", "bucket": bucket, "region": "us-east-1", "endpoint": moto.url}, "batches": batches}
        aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
        a = cluster.make(extra_env={**cluster.env(), **aws}, config_extra=extra)
        b = cluster.make(extra_env={**cluster.env(), **aws}, config_extra=extra)
        cluster.replicas += [a, b]
        for g in (a, b):
            g.admin_token = cluster.admin_token
        yield a, b
    finally:
        moto.stop()



def submit_batch(client, model, prefix, n, marker):
    """Uploads n chat lines (custom ids prefix0…, contents "marker i") and makes a batch of them."""
    import json
    lines = [{"custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": model, "messages": [{"role": "user", "content": f"{marker} {i}"}]}} for i in range(n)]
    f = client.files.create(file=("in.jsonl", "\n".join(json.dumps(x) for x in lines).encode()), purpose="batch")
    return client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")

def test_a_batch_goes_on_at_another_replica_when_its_replica_is_killed(cluster, upstream):
    """Batches (issue 20) run on any replica: blobs in moto's S3 (shared by both replicas), the
    batch made through a, a killed mid-way; b takes it up once a's lease lapses and completes it,
    with no line sent twice."""
    import json
    with two_replicas_on_s3(cluster, "keyward-batches", {"lease_seconds": 3}) as (a, b):
        b.stop()  # b starts after a has taken the batch, so that a runs it
        token = a.new_tenant("batched")
        marker = uuid.uuid4().hex
        c = a.openai(token)
        batch = submit_batch(c, "mock-tick", "c", 200, marker)

        def asked():
            return [body["messages"][-1]["content"] for body in upstream.bodies("/v1/chat/completions")
                    if marker in body["messages"][-1]["content"]]
        assert wait_until(lambda: len(asked()) >= 30, 30) is not None
        a.stop(signal.SIGKILL)
        b.start()
        c = b.openai(token)
        deadline = time.time() + 60
        while (done := c.batches.retrieve(batch.id)).status not in ("completed", "failed", "cancelled", "expired"):
            assert time.time() < deadline, done
            time.sleep(0.2)
        assert done.status == "completed", done
        sent = asked()
        assert len(sent) == len(set(sent)), "a line was sent twice"
        out = [json.loads(x) for x in c.files.content(done.output_file_id).read().splitlines()]
        errors = [json.loads(x) for x in c.files.content(done.error_file_id).read().splitlines()] if done.error_file_id else []
        assert sorted(r["custom_id"] for r in out + errors) == sorted(f"c{i}" for i in range(200))
        assert all(e["error"]["code"] == "request_interrupted" for e in errors)
        status, events, _ = b.as_role("auditor", "GET", "/admin/v1/audit?operation=batch_run")
        assert status == 200 and len([e for e in events["data"] if e["record"] == batch.id]) == 2  # a, then b


def test_a_replica_keeps_its_batch_while_its_lines_take_longer_than_the_lease(cluster, upstream):
    """The lease is renewed while lines are in flight and while the files are written, not only
    while lines are being sent: eight lines of 2.5 seconds each, all in flight at once, under a
    one-second lease, with a second replica waiting for any lapse. Before, the lease lapsed once
    the last line was sent; the other replica took the batch and wrote every line as
    request_interrupted while the first was still receiving the answers."""
    import json
    with two_replicas_on_s3(cluster, "keyward-lease", {"lease_seconds": 1, "concurrency": 8}) as (a, b):
        token = a.new_tenant("leased")
        marker = uuid.uuid4().hex
        c = a.openai(token)
        batch = submit_batch(c, "mock-lag", "s", 8, marker)
        deadline = time.time() + 60
        while (done := c.batches.retrieve(batch.id)).status not in ("completed", "failed", "cancelled", "expired"):
            assert time.time() < deadline, done
            time.sleep(0.2)
        errors = c.files.content(done.error_file_id).read().decode()[:2000] if done.error_file_id else ""
        assert done.status == "completed" and not errors, errors
        assert done.request_counts.completed == 8 and done.request_counts.failed == 0
        out = [json.loads(x) for x in c.files.content(done.output_file_id).read().splitlines()]
        assert [r["custom_id"] for r in out] == [f"s{i}" for i in range(8)]
        sent = [body["messages"][-1]["content"] for body in upstream.bodies("/v1/chat/completions")
                if marker in body["messages"][-1]["content"]]
        assert sorted(sent) == sorted(f"{marker} {i}" for i in range(8))
        status, events, _ = b.as_role("auditor", "GET", "/admin/v1/audit?operation=batch_run")
        assert status == 200 and len([e for e in events["data"] if e["record"] == batch.id]) == 1  # nobody took it over


class PausingProxy:
    """A TCP proxy to PostgreSQL that can stop moving bytes, as a network partition does: nothing is
    closed, nothing is refused, nothing gets through (new connections are accepted and held) until
    it heals, when whatever was held flows again."""

    def __init__(self, host, port):
        import socket
        self.target = (host, port)
        self.moving = threading.Event()
        self.moving.set()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        import socket
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            def connect(client=client):
                self.moving.wait()
                try:
                    upstream = socket.create_connection(self.target)
                except OSError:
                    client.close()
                    return
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()
            threading.Thread(target=connect, daemon=True).start()

    def pipe(self, a, b):
        try:
            while data := a.recv(65536):
                self.moving.wait()
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self):
        self.moving.set()
        self.server.close()


def test_a_replica_cut_off_from_the_database_for_10_s_answers_503_and_recovers(cluster):
    """One replica reaches PostgreSQL through a proxy that stops moving bytes for 10 s: its
    requests are refused (503) within the database's 5 s deadline instead of hanging, the other
    replica goes on, and once the partition heals the first serves again by itself, with every
    exchange it acknowledged there."""
    parts = urllib.parse.urlsplit(cluster.url)
    proxy = PausingProxy(parts.hostname, parts.port)
    try:
        cut_url = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
        a = cluster.make(extra_env={**cluster.env(), "KEYWARD_DATABASE_URL": cut_url})
        b = cluster.replica()
        a.admin_token = cluster.admin_token
        cluster.replicas += [a]
        token = a.new_tenant("parted")
        def ask(g, text):
            status, answer, _ = g.request("POST", "/v1/chat/completions",
                                          {"model": "keyward/echo", "messages": [{"role": "user", "content": text}]}, token=token)
            return status, answer

        acknowledged = [chat(a, token, "before")]
        proxy.moving.clear()
        started = time.time()
        refused, longest = 0, 0.0
        while time.time() - started < 10:
            t0 = time.time()
            status, answer = ask(a, f"during {refused}")
            if status == 200:
                acknowledged.append(answer["id"])
            else:
                assert status == 503, (status, answer)
                refused += 1
            longest = max(longest, time.time() - t0)
            assert time.time() - t0 < 9, "a request waited on the partition well past the database's 5 s deadline"
            # The other replica is not affected.
            acknowledged.append(chat(b, token, "elsewhere"))
        assert refused > 0
        proxy.moving.set()
        deadline = time.time() + 30
        while (answer := ask(a, "after"))[0] != 200:
            assert answer[0] == 503 and time.time() < deadline, answer
            time.sleep(0.5)
        acknowledged.append(answer[1]["id"])
        for cid in acknowledged:
            status, stored, _ = b.request("GET", f"/v1/chat/completions/{cid}", token=token)
            assert status == 200 and stored["id"] == cid, (status, stored)
        print(f"partitioned 10 s: {refused} requests refused with 503 (the longest wait {longest:.1f} s), "
              f"{len(acknowledged)} acknowledged and all there")
    finally:
        proxy.close()
