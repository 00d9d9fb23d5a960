"""aws-kms: keys against a moto KMS server, messages read by aws-encryption-cli and the reverse."""
import os
import subprocess
import time

import pytest

from esdk import aes_key, kw
from kms_peers import FaultProxy, Moto, free_port


@pytest.fixture(scope="module")
def moto():
    server = Moto()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(moto):
    p = FaultProxy(moto.port)
    yield p
    p.stop()


@pytest.fixture
def kms(moto, monkeypatch):
    for name, value in {"AWS_ENDPOINT_URL_KMS": moto.url, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto


def new_key():
    r = kw("keys", "create", "aws-kms")
    assert r.returncode == 0, r.stderr
    reference = r.stdout.split()[0].decode()
    assert reference.startswith("aws-kms:arn:aws:kms:us-east-1:")
    return reference, reference[len("aws-kms:"):]


def encrypt(tmp_path, data, *keys, context=(), suite="0x0578"):
    src, dst = tmp_path / "kms.plain", tmp_path / "kms.enc"
    src.write_bytes(data)
    args = ["encrypt", "-i", str(src), "-o", str(dst), "--algorithm", suite]
    for k in keys:
        args += ["--wrapping-key", k]
    for c in context:
        args += ["--context", c]
    return kw(*args), dst


def decrypt(tmp_path, enc, *keys, context=()):
    out = tmp_path / "kms.out"
    if out.exists():
        out.unlink()
    args = ["decrypt", "-i", str(enc), "-o", str(out)]
    for k in keys:
        args += ["--wrapping-key", k]
    for c in context:
        args += ["--context", c]
    r = kw(*args)
    return r, (out.read_bytes() if out.exists() else None)


def esdk_cli(*args):
    return subprocess.run(["aws-encryption-cli", *args, "-S"], capture_output=True, timeout=120)


@pytest.mark.parametrize("suite", ["0x0478", "0x0578"])
def test_aws_encryption_cli_reads_keyward(kms, tmp_path, suite):
    ref, arn = new_key()
    data = os.urandom(70000)
    r, enc = encrypt(tmp_path, data, ref, context=["tenant=a", "purpose=test"], suite=suite)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "cli.out"
    r = esdk_cli("--decrypt", "--input", str(enc), "--output", str(out), "--wrapping-keys", f"key={arn}",
                 "--encryption-context", "tenant=a")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == data


def test_keyward_reads_aws_encryption_cli(kms, tmp_path):
    ref, arn = new_key()
    data = os.urandom(5000)
    src, enc = tmp_path / "p", tmp_path / "cli.enc"
    src.write_bytes(data)
    r = esdk_cli("--encrypt", "--input", str(src), "--output", str(enc), "--wrapping-keys", f"key={arn}",
                 "--encryption-context", "tenant=b", "team=x")
    assert r.returncode == 0, r.stderr
    r, out = decrypt(tmp_path, enc, ref, context=["tenant=b"])
    assert r.returncode == 0, r.stderr
    assert out == data
    r, out = decrypt(tmp_path, enc, ref, context=["tenant=c"])
    assert r.returncode == 1 and out is None


def test_kms_and_local_keys_together(kms, tmp_path, monkeypatch):
    monkeypatch.setenv("KEYWARD_KEYSTORE", str(tmp_path / "store"))
    assert kw("keys", "create", "local:l").returncode == 0
    ref, _ = new_key()
    data = b"two stores"
    r, enc = encrypt(tmp_path, data, ref, "local:l")
    assert r.returncode == 0, r.stderr
    assert decrypt(tmp_path, enc, "local:l")[1] == data
    assert decrypt(tmp_path, enc, ref)[1] == data


def test_lifecycle_states(kms, tmp_path):
    ref, _ = new_key()
    data = b"lifecycle"
    r, enc = encrypt(tmp_path, data, ref)
    assert r.returncode == 0
    old = enc.read_bytes()
    assert kw("keys", "rotate", ref).returncode == 0
    assert decrypt(tmp_path, enc, ref)[1] == data  # old ciphertext after rotation
    assert kw("keys", "disable", ref).returncode == 0
    assert b"state=disabled" in kw("keys", "show", ref).stdout
    assert kw("keys", "enable", ref).returncode == 0
    r = kw("keys", "schedule-deletion", ref, "--days", "7")
    assert r.returncode == 0 and b"will be destroyed on" in r.stdout
    assert b"state=pending-deletion" in kw("keys", "show", ref).stdout
    assert kw("keys", "cancel-deletion", ref).returncode == 0
    assert b"state=disabled" in kw("keys", "show", ref).stdout
    assert kw("keys", "enable", ref).returncode == 0
    assert ref.encode() in kw("keys", "list", "aws-kms").stdout
    enc.write_bytes(old)
    assert decrypt(tmp_path, enc, ref)[1] == data


@pytest.mark.parametrize("fault, code", [
    ((400, "DisabledException", "arn:... is disabled."), b"key_disabled"),
    ((400, "KMSInvalidStateException", "arn:... is pending deletion."), b"key_pending_deletion"),
    ((400, "AccessDeniedException", "User is not authorized"), b"access_denied"),
    ((400, "NotFoundException", "Key does not exist"), b"key_not_found"),
])
def test_kms_errors_map_to_our_codes(kms, proxy, tmp_path, monkeypatch, fault, code):
    """Error answers come from our proxy: moto does not enforce key states on Decrypt."""
    ref, _ = new_key()
    r, enc = encrypt(tmp_path, b"x", ref)
    assert r.returncode == 0
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", proxy.url)
    proxy.reset()
    proxy.faults["Decrypt"] = [fault]
    r, out = decrypt(tmp_path, enc, ref)
    assert r.returncode == 1 and out is None
    assert code in r.stderr, r.stderr


def test_throttling_is_retried_then_succeeds(kms, proxy, tmp_path, monkeypatch):
    ref, _ = new_key()
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", proxy.url)
    proxy.reset()
    proxy.faults["GenerateDataKey"] = [(400, "ThrottlingException", "Rate exceeded")] * 2
    r, enc = encrypt(tmp_path, b"after two throttles", ref)
    assert r.returncode == 0, r.stderr
    assert proxy.calls.count("GenerateDataKey") == 3


def test_persistent_throttling_ends_in_a_clear_error(kms, proxy, tmp_path, monkeypatch):
    ref, _ = new_key()
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", proxy.url)
    proxy.reset()
    proxy.faults["GenerateDataKey"] = [(400, "ThrottlingException", "Rate exceeded")] * 10
    r, enc = encrypt(tmp_path, b"x", ref)
    assert r.returncode == 1 and not enc.exists()
    assert b"throttled" in r.stderr
    assert proxy.calls.count("GenerateDataKey") == 4  # the first try and three retries


def test_server_errors_are_retried(kms, proxy, tmp_path, monkeypatch):
    ref, _ = new_key()
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", proxy.url)
    proxy.reset()
    proxy.faults["GenerateDataKey"] = [(500, "KMSInternalException", "boom")]
    r, _ = encrypt(tmp_path, b"x", ref)
    assert r.returncode == 0, r.stderr
    assert proxy.calls.count("GenerateDataKey") == 2


def test_endpoint_down_is_key_unavailable(kms, tmp_path, monkeypatch):
    ref, _ = new_key()
    r, enc = encrypt(tmp_path, b"x", ref)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("KEYWARD_KMS_TIMEOUT_MS", "2000")
    start = time.monotonic()
    r, out = decrypt(tmp_path, enc, ref)
    assert r.returncode == 1 and out is None
    assert b"key_unavailable" in r.stderr
    assert time.monotonic() - start < 5


def test_hanging_endpoint_times_out(kms, proxy, tmp_path, monkeypatch):
    ref, _ = new_key()
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", proxy.url)
    monkeypatch.setenv("KEYWARD_KMS_TIMEOUT_MS", "1500")
    proxy.reset()
    proxy.faults["GenerateDataKey"] = "hang"
    start = time.monotonic()
    r, enc = encrypt(tmp_path, b"x", ref)
    elapsed = time.monotonic() - start
    assert r.returncode == 1 and not enc.exists()
    assert b"key_unavailable" in r.stderr
    assert 1.4 < elapsed < 4.5, elapsed


def test_connections_are_reused(kms, proxy, tmp_path, monkeypatch):
    refs = [new_key()[0] for _ in range(4)]
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", proxy.url)
    proxy.reset()
    r, _ = encrypt(tmp_path, b"x", *refs)  # one GenerateDataKey and three Encrypt calls
    assert r.returncode == 0, r.stderr
    assert proxy.calls == ["GenerateDataKey", "Encrypt", "Encrypt", "Encrypt"]
    assert proxy.connections == 1
