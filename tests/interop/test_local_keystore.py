"""The local key store through the CLI, with real processes: concurrency, crashes, root keys."""
import json
import os
import random
import signal
import stat
import subprocess
import time

import pytest

from esdk import keyward_binary, kw


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYWARD_KEYSTORE", str(tmp_path / "store"))
    monkeypatch.delenv("KEYWARD_ROOT_PASSPHRASE", raising=False)
    monkeypatch.delenv("KEYWARD_ROOT_KEY_FILE", raising=False)
    r = kw("keys", "create", "local:k")
    assert r.returncode == 0, r.stderr
    return tmp_path / "store"


def versions(store):
    return len(json.loads((store / "keys" / "k.json").read_text())["versions"])


def encrypt_with(tmp_path, name, data):
    src, dst = tmp_path / f"{name}.plain", tmp_path / f"{name}.enc"
    src.write_bytes(data)
    r = kw("encrypt", "-i", str(src), "-o", str(dst), "--wrapping-key", "local:k", "--context", f"n={name}")
    assert r.returncode == 0, r.stderr
    return dst


def decrypts(tmp_path, enc, data):
    out = tmp_path / "check.out"
    r = kw("decrypt", "-i", str(enc), "-o", str(out), "--wrapping-key", "local:k")
    return r.returncode == 0 and out.read_bytes() == data


def test_root_key_file_is_private(store):
    mode = stat.S_IMODE(os.stat(store / "root.key").st_mode)
    assert mode == 0o600
    assert os.path.getsize(store / "root.key") == 32


def test_wrong_root_key_is_refused_with_a_clear_error(store, tmp_path):
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    r = kw("keys", "show", "local:k", "--root-key-file", str(other))
    assert r.returncode == 1
    assert b"does not open this key store" in r.stderr and b"store_corrupt" in r.stderr


def test_two_processes_rotating_at_once(store):
    script = f'for i in $(seq 15); do "{keyward_binary()}" keys rotate local:k || exit 1; done'
    procs = [subprocess.Popen(["bash", "-c", script]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert versions(store) == 31


def test_killed_writers_leave_the_previous_state_intact(store, tmp_path):
    data = os.urandom(1000)
    messages = [encrypt_with(tmp_path, "m0", data)]
    # Kill within twice the time a rotation takes here, so kills land before, during and after.
    start = time.perf_counter()
    assert kw("keys", "rotate", "local:k").returncode == 0
    window = 2 * (time.perf_counter() - start)
    seen = versions(store)
    rng = random.Random(7)
    outcomes = set()
    for i in range(40):
        p = subprocess.Popen([keyward_binary(), "keys", "rotate", "local:k"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, window))
        p.send_signal(signal.SIGKILL)
        p.wait()
        # Whatever moment the kill landed at, the key file is whole: the old state or the new one.
        now = versions(store)
        assert now in (seen, seen + 1), (seen, now)
        outcomes.add(now - seen)
        seen = now
        if i % 10 == 0:
            messages.append(encrypt_with(tmp_path, f"m{i + 1}", data))
    assert outcomes == {0, 1}, "kills should land both before and after some rotations complete"
    assert all(decrypts(tmp_path, m, data) for m in messages)
    r = kw("keys", "rotate", "local:k")  # the next writer clears leftovers of killed ones
    assert r.returncode == 0
    assert [f for f in os.listdir(store / "keys") if f.startswith(".")] == []


def test_passphrase_root_key(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYWARD_KEYSTORE", str(tmp_path / "pstore"))
    monkeypatch.setenv("KEYWARD_ROOT_PASSPHRASE", "correct horse battery staple")
    assert kw("keys", "create", "local:p").returncode == 0
    assert not (tmp_path / "pstore" / "root.key").exists()
    monkeypatch.setenv("KEYWARD_ROOT_PASSPHRASE", "wrong")
    r = kw("keys", "show", "local:p")
    assert r.returncode == 1 and b"does not open" in r.stderr
    assert b"correct horse" not in r.stderr and b"wrong" not in r.stderr


def test_lifecycle_through_the_cli(store, tmp_path):
    data = b"lifecycle"
    enc = encrypt_with(tmp_path, "a", data)
    assert kw("keys", "disable", "local:k").returncode == 0
    r = kw("decrypt", "-i", str(enc), "-o", str(tmp_path / "x"), "--wrapping-key", "local:k")
    assert r.returncode == 1 and b"key_disabled" in r.stderr and not (tmp_path / "x").exists()
    assert kw("keys", "enable", "local:k").returncode == 0
    assert decrypts(tmp_path, enc, data)
    assert kw("keys", "rotate", "local:k").returncode == 0
    enc2 = encrypt_with(tmp_path, "b", data)
    assert decrypts(tmp_path, enc, data) and decrypts(tmp_path, enc2, data)
    r = kw("keys", "schedule-deletion", "local:k", "--days", "7")
    assert r.returncode == 0 and b"will be destroyed on" in r.stdout
    r = kw("decrypt", "-i", str(enc), "-o", str(tmp_path / "x"), "--wrapping-key", "local:k")
    assert r.returncode == 1 and b"key_pending_deletion" in r.stderr
    assert kw("keys", "cancel-deletion", "local:k").returncode == 0
    assert b"state=disabled" in kw("keys", "show", "local:k").stdout
    assert kw("keys", "enable", "local:k").returncode == 0
    assert decrypts(tmp_path, enc2, data)
    assert kw("keys", "schedule-deletion", "local:k", "--days", "3").returncode == 2
    assert b"local:k state=enabled versions=2" in kw("keys", "list").stdout


def test_key_material_never_appears_in_the_clear(store, tmp_path):
    # The data key of a message must not be recoverable from the store's files without the root key:
    # the sealed material is all that is there, and the root key file is the only other secret.
    blob = b"".join((store / "keys" / f).read_bytes() for f in os.listdir(store / "keys"))
    doc = json.loads((store / "keys" / "k.json").read_text())
    assert set(doc["versions"][0]) == {"version", "created", "material"}
    assert len(__import__("base64").b64decode(doc["versions"][0]["material"])) == 12 + 32 + 16
    assert (store / "root.key").read_bytes() not in blob
