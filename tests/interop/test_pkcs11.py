"""pkcs11: keys on a SoftHSM2 token initialised for the test, checked with pkcs11-tool."""
import os
import subprocess

import pytest

from esdk import kw

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


@pytest.fixture
def token(tmp_path, monkeypatch):
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "kw", "--pin", "1234", "--so-pin", "5678"],
                   check=True, capture_output=True)
    pin = tmp_path / "pin"
    pin.write_text("1234\n")
    return tmp_path, f"module-path={MODULE}&pin-source={pin}"


def uri(token, obj="k", query=None):
    return f"pkcs11:token=kw;object={obj}?{query or token[1]}"


def roundtrip(tmp_path, ref, data=b"hsm data", context=("tenant=a",)):
    src, enc, out = tmp_path / "p", tmp_path / "e", tmp_path / "o"
    src.write_bytes(data)
    args = ["encrypt", "-i", str(src), "-o", str(enc), "--wrapping-key", ref]
    for c in context:
        args += ["--context", c]
    r = kw(*args)
    assert r.returncode == 0, r.stderr
    r = kw("decrypt", "-i", str(enc), "-o", str(out), "--wrapping-key", ref)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == data
    return enc


def objects(token):
    r = subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", "kw", "--login", "--pin", "1234",
                        "--list-objects", "--type", "secrkey"], capture_output=True, text=True)
    return r.stdout


def test_created_keys_are_non_extractable_and_round_trip(token):
    ref = uri(token)
    r = kw("keys", "create", ref)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"pkcs11:token=kw;object=k state=enabled versions=1")
    listing = objects(token)
    assert "never extractable" in listing and "sensitive" in listing
    enc = roundtrip(token[0], ref)
    assert b"1234" not in enc.read_bytes() and MODULE.encode() not in enc.read_bytes()


def test_keys_made_by_pkcs11_tool_are_usable(token):
    subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", "kw", "--login", "--pin", "1234",
                    "--keygen", "--key-type", "AES:32", "--label", "external", "--id", "01"], check=True, capture_output=True)
    roundtrip(token[0], uri(token, "external"))


def test_rotation_keeps_old_messages_readable(token):
    ref = uri(token)
    assert kw("keys", "create", ref).returncode == 0
    old = roundtrip(token[0], ref).read_bytes()
    assert kw("keys", "rotate", ref).returncode == 0
    assert b"versions=2" in kw("keys", "show", ref).stdout
    new = roundtrip(token[0], ref).read_bytes()
    assert new != old
    tmp = token[0]
    (tmp / "old").write_bytes(old)
    r = kw("decrypt", "-i", str(tmp / "old"), "-o", "-", "--wrapping-key", ref)
    assert r.returncode == 0 and r.stdout == b"hsm data"
    assert objects(token).count("label:      k") == 2


def test_disable_and_enable(token):
    ref = uri(token)
    assert kw("keys", "create", ref).returncode == 0
    enc = roundtrip(token[0], ref)
    assert kw("keys", "disable", ref).returncode == 0
    r = kw("decrypt", "-i", str(enc), "-o", str(token[0] / "x"), "--wrapping-key", ref)
    assert r.returncode == 1 and b"key_disabled" in r.stderr and not (token[0] / "x").exists()
    assert b"state=disabled" in kw("keys", "show", ref).stdout
    assert kw("keys", "enable", ref).returncode == 0
    roundtrip(token[0], ref)


def test_wrong_pin(token):
    assert kw("keys", "create", uri(token)).returncode == 0
    r = kw("keys", "show", uri(token, query=f"module-path={MODULE}&pin-value=987654"))
    assert r.returncode == 1 and b"access_denied" in r.stderr
    assert b"987654" not in r.stderr


def test_missing_object_and_module(token):
    r = kw("keys", "show", uri(token, "nothing"))
    assert r.returncode == 1 and b"key_not_found" in r.stderr
    r = kw("keys", "show", uri(token, query="module-path=/nonexistent/module.so&pin-value=1234"))
    assert r.returncode == 1 and b"key_unavailable" in r.stderr and b"cannot load" in r.stderr
    r = kw("keys", "show", "pkcs11:token=nope;object=k?" + token[1])
    assert r.returncode == 1 and b"no PKCS#11 token labelled nope" in r.stderr


def test_context_is_bound(token):
    ref = uri(token)
    assert kw("keys", "create", ref).returncode == 0
    enc = roundtrip(token[0], ref, context=("tenant=a",))
    data = bytearray(enc.read_bytes())
    # Change the context value "a" to "b" in the header: the HSM's GCM unwrap (AAD) refuses it.
    i = data.index(b"tenant\x00\x01a")
    data[i + 9] = ord("b")
    (token[0] / "bad").write_bytes(bytes(data))
    r = kw("decrypt", "-i", str(token[0] / "bad"), "-o", str(token[0] / "x"), "--wrapping-key", ref)
    assert r.returncode == 1 and not (token[0] / "x").exists()
