"""The CLI refuses bad input with exit code 1 (crypto) or 2 (usage), says why, and leaves no output."""
import base64
import os

import pytest

from esdk import aes_key, kw, py_encrypt


@pytest.fixture
def message(tmp_path):
    key = aes_key(tmp_path)
    plaintext = os.urandom(1000)
    return key, plaintext, py_encrypt(plaintext, [key], "0x0578", 256, {"tenant": "a"})


def run_decrypt(tmp_path, data, key_spec, *extra):
    src, out = tmp_path / "in", tmp_path / "out"
    src.write_bytes(data)
    r = kw("decrypt", "-i", str(src), "-o", str(out), "--wrapping-key", key_spec, *extra)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out") or p.name == "out"]
    return r, leftovers


def flip(data, index):
    b = bytearray(data)
    b[index] ^= 1
    return bytes(b)


@pytest.mark.parametrize("case", ["header", "edk", "frame", "tag", "signature", "truncated", "trailing", "empty"])
def test_damaged_messages_leave_nothing(tmp_path, message, case):
    key, _, ct = message
    damaged = {
        "header": lambda: flip(ct, 3),           # message ID
        "edk": lambda: flip(ct, len(ct) // 8),   # inside the encrypted data key region of the header
        "frame": lambda: flip(ct, len(ct) // 2),
        "tag": lambda: flip(ct, len(ct) - 120),  # last bytes of the final frame, before the footer
        "signature": lambda: flip(ct, len(ct) - 3),
        "truncated": lambda: ct[:-40],
        "trailing": lambda: ct + b"\0",
        "empty": lambda: b"",
    }[case]()
    r, leftovers = run_decrypt(tmp_path, damaged, key.spec)
    assert r.returncode == 1, r.stderr
    assert leftovers == []
    assert r.stderr.startswith(b"keyward: error:")


def test_wrong_key(tmp_path, message):
    _, _, ct = message
    other = aes_key(tmp_path, name="aes")  # same name, other bytes
    r, leftovers = run_decrypt(tmp_path, ct, other.spec)
    assert r.returncode == 1 and leftovers == []
    assert b"no_decryptable_key" in r.stderr


def test_missing_required_context(tmp_path, message):
    key, _, ct = message
    r, leftovers = run_decrypt(tmp_path, ct, key.spec, "--context", "tenant=b")
    assert r.returncode == 1 and leftovers == []
    assert b"encryption_context_mismatch" in r.stderr


def test_base64_input_is_explained(tmp_path, message):
    key, _, ct = message
    r, leftovers = run_decrypt(tmp_path, base64.b64encode(ct), key.spec)
    assert r.returncode == 1 and leftovers == []
    assert b"base64" in r.stderr


def test_max_encrypted_data_keys(tmp_path):
    a, b = aes_key(tmp_path, name="a"), aes_key(tmp_path, name="b")
    ct = py_encrypt(b"x", [a, b])
    r, leftovers = run_decrypt(tmp_path, ct, a.spec, "--max-encrypted-data-keys", "1")
    assert r.returncode == 1 and leftovers == []
    assert b"too_many_encrypted_data_keys" in r.stderr
    r, _ = run_decrypt(tmp_path, ct, a.spec, "--max-encrypted-data-keys", "2")
    assert r.returncode == 0


def test_stdin_and_stdout(tmp_path, message):
    key, plaintext, ct = message
    r = kw("decrypt", "-i", "-", "-o", "-", "--wrapping-key", key.spec, input=ct)
    assert r.returncode == 0 and r.stdout == plaintext
    r = kw("encrypt", "-i", "-", "-o", "-", "--wrapping-key", key.spec, input=plaintext)
    assert r.returncode == 0
    r2 = kw("decrypt", "-i", "-", "-o", "-", "--wrapping-key", key.spec, input=r.stdout)
    assert r2.stdout == plaintext


def test_existing_output_survives_a_failed_decrypt(tmp_path, message):
    key, _, ct = message
    out = tmp_path / "out"
    out.write_bytes(b"previous contents")
    src = tmp_path / "in"
    src.write_bytes(flip(ct, len(ct) // 2))
    r = kw("decrypt", "-i", str(src), "-o", str(out), "--wrapping-key", key.spec)
    assert r.returncode == 1
    assert out.read_bytes() == b"previous contents"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_device_output_is_written_not_replaced(tmp_path, message):
    key, _, ct = message
    src = tmp_path / "in"
    src.write_bytes(ct)
    r = kw("decrypt", "-i", str(src), "-o", "/dev/null", "--wrapping-key", key.spec)
    assert r.returncode == 0
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


@pytest.mark.parametrize("args", [
    ["encrypt", "-i", "x", "-o", "y"],                                   # no wrapping key
    ["encrypt", "-i", "x", "-o", "y", "--wrapping-key", "bogus"],
    ["encrypt", "-i", "x", "-o", "y", "--wrapping-key", "raw-aes:namespace=a,name=b,key=@x", "--algorithm", "0x0178"],
    ["encrypt", "-i", "x", "-o", "y", "--wrapping-key", "raw-aes:namespace=a,name=b,key=@x", "--frame-length", "0"],
    ["decrypt", "-i", "x", "-o", "y", "--wrapping-key", "raw-aes:namespace=a,name=b,key=@x", "--commitment-policy", "nope"],
    ["decrypt", "-i", "x", "-o", "y", "--wrapping-key", "raw-aes:namespace=a,name=b,key=@x", "--context", "novalue"],
    ["frobnicate"],
])
def test_usage_errors_exit_2(tmp_path, args):
    r = kw(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)


def test_key_material_is_not_echoed(tmp_path):
    secret = base64.b64encode(b"S" * 31).decode()  # wrong size on purpose
    r = kw("encrypt", "-i", "-", "-o", "-", "--wrapping-key", f"raw-aes:namespace=a,name=b,key=base64:{secret}", input=b"x")
    assert r.returncode != 0
    assert secret.encode() not in r.stderr and secret.encode() not in r.stdout
