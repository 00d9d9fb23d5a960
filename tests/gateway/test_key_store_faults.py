"""A key store that misbehaves (issue 24): moto's KMS server behind a fault-injecting proxy that
delays, hangs, resets, drops or answers garbage. Each request that needs the key then fails
within KEYWARD_KMS_TIMEOUT_MS with 503 key_unavailable and nothing reaches the model; the
gateway's threads and file descriptors do not grow; once the store behaves, the same tenant is
served again without a restart."""
import os
import sys
import tempfile
import time

import boto3
import openai
import pytest

from conftest import Gateway

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop"))
from kms_peers import FaultProxy, Moto  # noqa: E402

TIMEOUT_MS = 1500


@pytest.fixture(scope="module")
def kms(upstream):
    moto = Moto()
    proxy = FaultProxy(moto.port)
    workdir = tempfile.mkdtemp(prefix="keyward-kms-faults-")
    g = Gateway(upstream, workdir, extra_env={"AWS_ENDPOINT_URL_KMS": proxy.url, "AWS_ACCESS_KEY_ID": "keyward",
                                              "AWS_SECRET_ACCESS_KEY": "keyward", "AWS_REGION": "us-east-1",
                                              "KEYWARD_KMS_TIMEOUT_MS": str(TIMEOUT_MS)})
    client = boto3.client("kms", region_name="us-east-1", endpoint_url=moto.url, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    try:
        yield g, proxy, client
    finally:
        g.stop()
        proxy.stop()
        moto.stop()


def resources(g):
    pid = g.proc.pid
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.parametrize("fault", ["hang", "reset", "drop", "garbage", ("delay", 5)],
                         ids=["hang", "reset", "drop", "garbage", "delay"])
def test_a_faulty_key_store_is_503_in_time_sends_nothing_and_recovers(kms, upstream, fault):
    g, proxy, client = kms
    arn = client.create_key(Description="keyward faults")["KeyMetadata"]["Arn"]
    name = f"faults-{len(proxy.calls)}-{time.time_ns()}"
    c = g.openai(g.new_tenant(name, key=f"aws-kms:{arn}"), timeout=30)
    before = resources(g)
    sent = upstream.count
    proxy.faults["GenerateDataKey"] = fault
    try:
        for i in range(3):
            started = time.time()
            with pytest.raises(openai.APIStatusError) as e:
                c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": f"fault {i}"}])
            elapsed = time.time() - started
            assert e.value.status_code == 503 and e.value.code == "key_unavailable", (e.value.status_code, e.value.body)
            assert elapsed < TIMEOUT_MS / 1000 + 3, elapsed  # slack for a loaded 2-core machine; a hang would take 30 s
        assert upstream.count == sent, "nothing reaches the model without a key"
    finally:
        proxy.faults.pop("GenerateDataKey", None)
    # Served again, without a restart.
    deadline = time.time() + 15
    while True:
        try:
            assert c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "back"}]).choices[0].message.content == "echo: back"
            break
        except openai.APIStatusError as e:
            assert e.status_code == 503 and time.time() < deadline, (e.status_code, e.body)
            time.sleep(0.5)
    # Abandoned calls leave nothing behind (a hung call's connection is closed once its deadline passes).
    time.sleep(0.5)
    fds, threads = resources(g)
    assert fds <= before[0] + 4 and threads <= before[1] + 2, (before, (fds, threads))
