"""Re-keying a tenant of 100,000 stored records while clients keep using it, a re-key killed
half-way and resumed, and a move to AWS KMS (moto server) and back."""
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse

import openai
import pytest

from keyward_paths import bench_bin, keyward_bin

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop"))
from kmip_peer import PyKMIP  # noqa: E402
from kms_peers import Moto  # noqa: E402
from vault_peer import Bao  # noqa: E402


def ref(key):
    return urllib.parse.quote(key, safe="")


def chat(client, text):
    return client.chat.completions.create(model="keyward/echo", messages=[{"role": "user", "content": text}])


class Traffic:
    """Clients that keep chatting and reading back until stopped; every failure is kept."""

    def __init__(self, g, token, threads=2):
        self.client = g.openai(token)
        self.stop = threading.Event()
        self.failures, self.requests, self.ids = [], 0, []
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]
        for t in self.threads:
            t.start()

    def run(self, n):
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                r = chat(self.client, f"traffic {n}-{i}")
                self.ids.append(r.id)
                back = self.client.chat.completions.retrieve(r.id)
                assert back.choices[0].message.content == f"traffic {n}-{i}"
                if len(self.ids) > 10:  # and an older record, likely not yet re-wrapped
                    self.client.chat.completions.retrieve(self.ids[len(self.ids) // 2])
                self.requests += 3
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(e))

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)
        return self.failures


def seeded_gateway(fresh_gateway, name, exchanges):
    """A gateway whose tenant `name` holds `exchanges` × 2 records, and an exporting token."""
    g = fresh_gateway()
    token = g.new_tenant(name)
    exporter, exporter_id = g.app_token(name)
    status, body, _ = g.admin("PUT", f"/admin/v1/keys/{ref('local:' + name)}/policy", {"grants": [
        {"principals": [f"tenant:{name}"], "purposes": ["inference", "retrieval"]},
        {"principals": [f"token:{exporter_id}"], "purposes": ["export"]},
    ]})
    assert status == 200, body
    assert g.stop() == 0
    # Seeded offline by the gateway's own code (the same vault and store), far faster than HTTP.
    out = subprocess.run([bench_bin(), "seed", g.data, name, str(exchanges)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    g.start()
    return g, token, exporter


def create_key(g, name):
    out = subprocess.run([keyward_bin(), "keys", "create", f"local:{name}", "--keystore", f"{g.data}/keys"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def assert_all_readable(g, exporter, at_least):
    records, end = g.export(exporter)
    assert end["object"] == "export.end" and end["records"] == len(records)
    assert len(records) >= at_least
    assert all(r["content"] for r in records)
    return len(records)


def test_rekey_100k_records_under_traffic_then_kill_and_resume(fresh_gateway):
    g, token, exporter = seeded_gateway(fresh_gateway, "big", 50_000)
    create_key(g, "big2")

    # 1. Re-key local:big → local:big2 while two clients chat and read back.
    traffic = Traffic(g, token)
    time.sleep(0.5)
    status, body, _ = g.as_role("key-admin", "POST", "/admin/v1/tenants/big/rekey", {"key": "local:big2"})
    assert status == 202, body
    job = g.wait_job(body["job"])
    time.sleep(0.5)
    failures = traffic.finish()
    assert failures == [], failures[:5]
    assert traffic.requests > 0
    assert job["status"] == "done", job
    assert job["records_processed"] >= 100_000 and job["records_rewrapped"] >= 100_000
    print(f"\nre-key of {job['records_processed']} records under traffic: {job['rate_per_second']:.0f} records/s, "
          f"{job['data_keys_unwrapped']} data keys unwrapped, {traffic.requests} client requests, 0 failed")
    # Each distinct data key was unwrapped once: far fewer than the records.
    assert job["data_keys_unwrapped"] < 100
    # The old key can go: disabled, nothing of the tenant's is affected.
    status, body, _ = g.as_role("key-admin", "POST", f"/admin/v1/keys/{ref('local:big')}/disable")
    assert status == 200, body
    total = assert_all_readable(g, exporter, 100_000 + len(traffic.ids) * 2)
    assert chat(g.openai(token), "after").choices[0].message.content == "after"

    # 2. Rotate local:big2, re-wrap everything under its new version, and kill -9 half-way.
    status, key, _ = g.as_role("key-admin", "POST", f"/admin/v1/keys/{ref('local:big2')}/rotate")
    assert status == 200 and key["versions"] == 2
    status, body, _ = g.as_role("key-admin", "POST", "/admin/v1/tenants/big/rekey", {"key": "local:big2"})
    assert status == 202, body
    job_id = body["job"]
    deadline = time.time() + 120
    while True:
        _, job, _ = g.as_role("key-admin", "GET", f"/admin/v1/jobs/{job_id}")
        if job["records_processed"] >= 20_000:
            break
        assert job["status"] == "running" and time.time() < deadline, job
        time.sleep(0.02)
    g.proc.send_signal(signal.SIGKILL)
    g.proc.wait(10)
    g.stdout.close()
    g.stderr.close()
    assert job["status"] == "running", ("the job ended before the kill: nothing was interrupted", str(job))
    killed_at = job["records_processed"]
    g.start()  # the job service resumes the running job from its last committed batch
    job = g.wait_job(job_id)
    assert job["status"] == "done", job
    assert job["records_processed"] >= total
    # Resumed, not restarted: at most one batch (500) is visited twice.
    assert job["records_processed"] <= total + 500 + 10
    print(f"rotation re-wrap killed at {killed_at} records, resumed and finished: {job['records_processed']} visited")
    assert assert_all_readable(g, exporter, total) == total + 2  # plus the "after" exchange

    # The audit chain held through the kill (the tail after the last checkpoint is unsigned, not broken).
    assert g.stop() == 0
    out = subprocess.run([keyward_bin(), "audit", "verify", "--data", g.data], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def provider_ids(g, tenant):
    db = sqlite3.connect(f"{g.data}/keyward.sqlite3")
    headers = [h for (h,) in db.execute("SELECT header FROM records WHERE tenant = ?", (tenant,))]
    db.close()
    def provider(h):
        for marker, name in [(b"aws-kms", "aws-kms"), (b"keyward-local", "local"), (b"vault-transit", "vault-transit"), (b"\x00\x04kmip", "kmip")]:
            if marker in h:
                return name
        return "?"
    return {provider(h) for h in headers}


def test_rekey_to_aws_kms_and_back(fresh_gateway):
    import boto3
    moto = Moto()
    try:
        env = {"AWS_ENDPOINT_URL_KMS": moto.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_REGION": "us-east-1"}
        kms = boto3.client("kms", region_name="us-east-1", endpoint_url=moto.url,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        arn = kms.create_key(Description="keyward re-key test")["KeyMetadata"]["Arn"]
        g = fresh_gateway(extra_env=env)
        token = g.new_tenant("cloud")
        c = g.openai(token)
        ids = [chat(c, f"m{i}").id for i in range(50)]
        assert provider_ids(g, "cloud") == {"local"}

        status, body, _ = g.as_role("key-admin", "POST", "/admin/v1/tenants/cloud/rekey", {"key": f"aws-kms:{arn}"})
        assert status == 202, body
        job = g.wait_job(body["job"])
        assert job["status"] == "done" and job["records_rewrapped"] == 100, job
        assert provider_ids(g, "cloud") == {"aws-kms"}
        # Under KMS now; the local key can be disabled without effect.
        status, _, _ = g.as_role("key-admin", "POST", f"/admin/v1/keys/{ref('local:cloud')}/disable")
        assert status == 200
        assert c.chat.completions.retrieve(ids[0]).choices[0].message.content == "m0"
        # Rotation through the gateway is KMS's RotateKeyOnDemand (and yearly rotation switched on).
        status, key, _ = g.as_role("key-admin", "POST", f"/admin/v1/keys/{ref('aws-kms:' + arn)}/rotate")
        assert status == 200 and key["rotation_enabled"] is True, key
        new = chat(c, "under kms").id
        # The policy went along with the tenant.
        status, policy, _ = g.admin("GET", f"/admin/v1/keys/{ref('aws-kms:' + arn)}/policy")
        assert {"principals": ["tenant:cloud"], "purposes": ["inference", "retrieval"]} in policy["grants"]

        # And back, to a new local key.
        create_key(g, "cloud-home")
        status, body, _ = g.as_role("key-admin", "POST", "/admin/v1/tenants/cloud/rekey", {"key": "local:cloud-home"})
        assert status == 202, body
        job = g.wait_job(body["job"])
        assert job["status"] == "done" and job["records_rewrapped"] == 102, job
        assert provider_ids(g, "cloud") == {"local"}
        # KMS is no longer needed at all: stop it, and every record still reads.
        moto.stop()
        assert c.chat.completions.retrieve(new).choices[0].message.content == "under kms"
        assert c.chat.completions.retrieve(ids[1]).choices[0].message.content == "m1"
        ops = {e["operation"] for e in
               g.as_role("auditor", "GET", "/admin/v1/audit?tenant=cloud&limit=1000")[1]["data"]}
        assert {"rekey_start", "rewrap", "rekey_done"} <= ops
    finally:
        if moto.process.poll() is None:
            moto.stop()


def test_rekey_to_an_hsm_and_back(fresh_gateway, tmp_path):
    module = "/usr/lib/softhsm/libsofthsm2.so"
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {"SOFTHSM2_CONF": str(conf)}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "kw", "--pin", "1234", "--so-pin", "5678"],
                   check=True, capture_output=True, env={**os.environ, **env})
    (tmp_path / "pin").write_text("1234\n")
    hsm = f"pkcs11:token=kw;object=gw?module-path={module}&pin-source={tmp_path / 'pin'}"
    out = subprocess.run([keyward_bin(), "keys", "create", hsm], capture_output=True, text=True, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr

    g = fresh_gateway(extra_env=env)
    c = g.openai(g.new_tenant("vault"))
    ids = [chat(c, f"h{i}").id for i in range(30)]
    # A reference that carries its PIN would be kept as given (the tenant's row, audit events, logs,
    # alerts): refused wherever the gateway would keep one, in words that do not repeat it.
    with_pin = hsm.replace(f"pin-source={tmp_path / 'pin'}", "pin-value=271828")
    for status, answer, _ in [g.as_role("key-admin", "POST", "/admin/v1/tenants/vault/rekey", {"key": with_pin}),
                              g.admin("POST", "/admin/v1/tenants", {"name": "pinned", "key": with_pin}),
                              g.as_role("key-admin", "GET", f"/admin/v1/keys/{ref(with_pin)}"),
                              g.as_role("key-admin", "POST", f"/admin/v1/keys/{ref(with_pin)}/disable")]:
        assert status == 400 and answer["error"]["code"] == "invalid_key_reference", answer
        assert "271828" not in str(answer) and "pin-source=" in answer["error"]["message"]
    # The audit key too: the gateway does not start on it.
    with pytest.raises(RuntimeError) as e:
        fresh_gateway(extra_env=env, config_extra={"audit": {"key": with_pin}})
    assert "pin-source=" in str(e.value) and "271828" not in str(e.value)
    status, body, _ = g.as_role("key-admin", "POST", "/admin/v1/tenants/vault/rekey", {"key": hsm})
    assert status == 202, body
    job = g.wait_job(body["job"])
    assert job["status"] == "done" and job["records_rewrapped"] == 60, job
    db = sqlite3.connect(f"{g.data}/keyward.sqlite3")
    headers = [h for (h,) in db.execute("SELECT header FROM records WHERE tenant = 'vault'")]
    db.close()
    # Wrapped inside the token; the PIN and module path are not written into the records.
    assert all(b"token=kw;object=gw" in h and b"1234" not in h and module.encode() not in h for h in headers)
    status, _, _ = g.as_role("key-admin", "POST", f"/admin/v1/keys/{ref('local:vault')}/disable")
    assert status == 200
    assert c.chat.completions.retrieve(ids[3]).choices[0].message.content == "h3"

    create_key(g, "vault-home")
    status, body, _ = g.as_role("key-admin", "POST", "/admin/v1/tenants/vault/rekey", {"key": "local:vault-home"})
    assert status == 202, body
    assert g.wait_job(body["job"])["status"] == "done"
    # The HSM key disabled: nothing of the tenant's needs it any more.
    status, _, _ = g.as_role("key-admin", "POST", f"/admin/v1/keys/{ref(hsm)}/disable")
    assert status == 200
    assert all(c.chat.completions.retrieve(i).choices[0].message.content == f"h{n}" for n, i in enumerate(ids))
    events = g.as_role("auditor", "GET", "/admin/v1/audit?limit=1000")[1]["data"]
    assert events and "271828" not in str(events)
    with open(g.stderr_path, errors="replace") as f:
        assert "271828" not in f.read()
    # A tenant that got such a reference before the gateway refused them keeps it manageable (its
    # key can be described and disabled under it), and each start warns of it, naming the tenant only.
    with sqlite3.connect(f"{g.data}/keyward.sqlite3", timeout=10) as db:
        db.execute("UPDATE tenants SET previous_key = ? WHERE name = 'vault'", (with_pin,))
    status, body, _ = g.as_role("key-admin", "GET", f"/admin/v1/keys/{ref(with_pin)}")
    assert status == 200 and body["tenants"] == ["vault"], body
    g.stop()
    g.start()
    with open(g.stderr_path, errors="replace") as f:
        warned = [line for line in f if "carries its PIN" in line]
    assert warned and "vault" in warned[-1] and "271828" not in "".join(warned)


def test_rekey_through_transit_and_kmip_and_back(fresh_gateway):
    """local → vault-transit → kmip → local, each re-key through the job, every record re-wrapped at
    each step; the local key it left first is disabled; at the end neither server is needed."""
    bao, kmip = Bao(), PyKMIP()
    try:
        assert bao.api("POST", "transit/keys/moving", {"type": "aes256-gcm96"})[0] == 200
        env = {**bao.env(), **kmip.env()}
        cli_env = {**{k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}, **env}
        out = subprocess.run([keyward_bin(), "keys", "create", "kmip:name=moving"], env=cli_env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        g = fresh_gateway(extra_env=env)
        c = g.openai(g.new_tenant("mover"))
        ids = [chat(c, f"r{i}").id for i in range(20)]
        records = 40
        previous = "local:mover"
        for target, provider in [("vault-transit:moving", "vault-transit"), ("kmip:name=moving", "kmip")]:
            status, body, _ = g.as_role("key-admin", "POST", "/admin/v1/tenants/mover/rekey", {"key": target})
            assert status == 202, body
            job = g.wait_job(body["job"])
            assert job["status"] == "done" and job["records_rewrapped"] == records, job
            assert provider_ids(g, "mover") == {provider}
            if previous.startswith("local:"):
                assert g.as_role("key-admin", "POST", f"/admin/v1/keys/{ref(previous)}/disable")[0] == 200
            ids.append(chat(c, f"under {provider}").id)
            records += 2
            assert c.chat.completions.retrieve(ids[0]).choices[0].message.content == "r0"
            previous = target
        create_key(g, "mover-home")
        status, body, _ = g.as_role("key-admin", "POST", "/admin/v1/tenants/mover/rekey", {"key": "local:mover-home"})
        assert status == 202, body
        assert g.wait_job(body["job"])["status"] == "done"
        assert provider_ids(g, "mover") == {"local"}
        bao.stop()
        kmip.stop()
        texts = [c.chat.completions.retrieve(i).choices[0].message.content for i in ids]
        assert texts == [f"r{i}" for i in range(20)] + ["under vault-transit", "under kmip"]
    finally:
        bao.stop()
        kmip.stop()


def test_an_exchange_that_outlasts_a_whole_rekey_is_stored_on_the_new_key(fresh_gateway, upstream):
    """A stream that began on the old key and ends after the re-key job has swept the tenant's
    records is stored on the new key (its data key wrapped anew, audited as `rewrap`): it still
    reads once the job has ended and the old key is disabled. Before, it stayed on the old key,
    which the tenant no longer opens: 500 no_decryptable_key."""
    g = fresh_gateway()
    token = g.new_tenant("outlasting")
    create_key(g, "outlasting-2")
    client = g.openai(token)
    words = " ".join(f"w{i}" for i in range(35))  # mock-drip: 0.4 s a word, 14 s in all
    first, done = threading.Event(), {}

    def stream():
        parts = []
        for chunk in client.chat.completions.create(model="mock-drip", messages=[{"role": "user", "content": words}],
                                                    stream=True, store=True):
            done["id"] = chunk.id
            parts += [c.delta.content or "" for c in chunk.choices]
            first.set()
        done["text"] = "".join(parts)
    t = threading.Thread(target=stream, daemon=True)
    t.start()
    assert first.wait(30)
    status, body, _ = g.as_role("key-admin", "POST", "/admin/v1/tenants/outlasting/rekey", {"key": "local:outlasting-2"})
    assert status == 202, body
    assert g.wait_job(body["job"])["status"] == "done"
    assert t.is_alive(), "the stream ended before the re-key did: this run shows nothing"
    t.join(60)
    assert done["text"] == "echo: " + words
    status, _, _ = g.as_role("key-admin", "POST", f"/admin/v1/keys/{ref('local:outlasting')}/disable")
    assert status == 200
    assert client.chat.completions.retrieve(done["id"]).choices[0].message.content == done["text"]
    events = g.as_role("auditor", "GET", "/admin/v1/audit?tenant=outlasting&operation=rewrap&limit=100")[1]["data"]
    assert [(e["key"], e["record"], e["detail"]) for e in events] == [("local:outlasting", done["id"], "to=local:outlasting-2")], events
