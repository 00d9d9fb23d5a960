"""keyward encrypt/decrypt against the Python aws-encryption-sdk, in both directions."""
import os

import pytest
from aws_encryption_sdk import CommitmentPolicy
from cryptography.hazmat.primitives import serialization

from esdk import V1_SUITES, aes_key, kw, py_decrypt, py_encrypt, rsa_key

FRAMES = [128, 4096, 65536]


def sizes(frame):
    return sorted({0, 1, frame - 1, frame, frame + 1, 3 * frame + 5})


def keyward_encrypt(tmp_path, plaintext, keys, suite="0x0478", frame=4096, context=None):
    src, dst = tmp_path / "plain", tmp_path / "enc"
    src.write_bytes(plaintext)
    args = ["encrypt", "-i", str(src), "-o", str(dst), "--algorithm", suite, "--frame-length", str(frame)]
    for k in keys:
        args += ["--wrapping-key", k.spec]
    for key, value in (context or {}).items():
        args += ["--context", f"{key}={value}"]
    r = kw(*args)
    assert r.returncode == 0, r.stderr.decode()
    return dst.read_bytes()


def keyward_decrypt(tmp_path, ciphertext, keys, extra=()):
    src, dst = tmp_path / "enc-in", tmp_path / "dec-out"
    src.write_bytes(ciphertext)
    if dst.exists():
        dst.unlink()
    args = ["decrypt", "-i", str(src), "-o", str(dst), *extra]
    for k in keys:
        args += ["--wrapping-key", k.spec]
    r = kw(*args)
    return r, (dst.read_bytes() if dst.exists() else None)


@pytest.mark.parametrize("suite", ["0x0478", "0x0578"])
@pytest.mark.parametrize("frame", FRAMES)
def test_keyward_to_python(tmp_path, suite, frame):
    key = aes_key(tmp_path)
    for n in sizes(frame):
        plaintext = os.urandom(n)
        ct = keyward_encrypt(tmp_path, plaintext, [key], suite, frame, {"tenant": "t1"})
        pt, header = py_decrypt(ct, [key])
        assert pt == plaintext, n
        assert header.algorithm.algorithm_id == int(suite, 16)
        assert header.frame_length == frame
        assert header.encryption_context["tenant"] == "t1"


@pytest.mark.parametrize("frame,size", [
    (128, (5 << 19) + 7),  # 2.5 MiB: 1 MiB batches of 8,192 frames, read 1,024 frames per call
    (4096, 3 << 20),       # whole batches exactly, then the empty final frame
    (65536, 40 * 65536 + 1),
])
@pytest.mark.parametrize("suite", ["0x0478", "0x0578"])
def test_large_files_cross_batches(tmp_path, frame, size, suite):
    """A regular file is read by the workers a batch of frames at a time (encrypting; decrypting an
    unsigned message): each direction against the Python SDK."""
    key = aes_key(tmp_path)
    plaintext = os.urandom(size)
    ct = keyward_encrypt(tmp_path, plaintext, [key], suite, frame)
    pt, header = py_decrypt(ct, [key])
    assert pt == plaintext
    assert header.frame_length == frame
    r, out = keyward_decrypt(tmp_path, py_encrypt(plaintext, [key], suite, frame, {}), [key])
    assert r.returncode == 0, r.stderr.decode()
    assert out == plaintext
    # A frame altered in the middle: refused, naming it, and nothing left behind.
    bad = bytearray(ct)
    bad[len(ct) // 2] ^= 1
    r, out = keyward_decrypt(tmp_path, bytes(bad), [key])
    assert r.returncode == 1 and out is None
    assert b"does not authenticate" in r.stderr or b"signature" in r.stderr, r.stderr


@pytest.mark.parametrize("suite", ["0x0478", "0x0578"])
@pytest.mark.parametrize("frame", FRAMES + [0])
def test_python_to_keyward(tmp_path, suite, frame):
    key = aes_key(tmp_path)
    for n in sizes(frame or 4096):
        plaintext = os.urandom(n)
        ct = py_encrypt(plaintext, [key], suite, frame, {"tenant": "t1"})
        r, out = keyward_decrypt(tmp_path, ct, [key], ["--context", "tenant=t1"])
        assert r.returncode == 0, (n, r.stderr.decode())
        assert out == plaintext, n


@pytest.mark.parametrize("size", [16, 24, 32])
def test_raw_aes_key_sizes(tmp_path, size):
    key = aes_key(tmp_path, size=size)
    plaintext = os.urandom(5000)
    assert py_decrypt(keyward_encrypt(tmp_path, plaintext, [key]), [key])[0] == plaintext
    assert keyward_decrypt(tmp_path, py_encrypt(plaintext, [key]), [key])[1] == plaintext


@pytest.mark.parametrize("padding", ["pkcs1", "oaep-sha1", "oaep-sha256", "oaep-sha384", "oaep-sha512"])
def test_raw_rsa_paddings(tmp_path, rsa_private_pem, padding):
    key = rsa_key(tmp_path, padding, rsa_private_pem)
    plaintext = os.urandom(3000)
    assert py_decrypt(keyward_encrypt(tmp_path, plaintext, [key], "0x0578"), [key])[0] == plaintext
    assert keyward_decrypt(tmp_path, py_encrypt(plaintext, [key], "0x0578"), [key])[1] == plaintext


def test_rsa_public_key_encrypts_for_python(tmp_path, rsa_private_pem):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    public_pem = load_pem_private_key(rsa_private_pem, None).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pub = tmp_path / "pub.pem"
    pub.write_bytes(public_pem)
    private = rsa_key(tmp_path, "oaep-sha256", rsa_private_pem)
    public_spec = f"raw-rsa:namespace=rsa,name=rsa,key=@{pub},padding=oaep-sha256"
    public = type(private)("rsa", "rsa", public_spec, None)
    plaintext = b"for the private key holder"
    ct = keyward_encrypt(tmp_path, plaintext, [public])
    assert py_decrypt(ct, [private])[0] == plaintext
    r, out = keyward_decrypt(tmp_path, ct, [public])
    assert r.returncode == 1 and out is None
    assert b"public key" in r.stderr


def test_multi_key_messages_decrypt_with_either_key(tmp_path):
    a, b = aes_key(tmp_path, name="a"), aes_key(tmp_path, name="b")
    plaintext = os.urandom(10000)
    ct = keyward_encrypt(tmp_path, plaintext, [a, b])
    assert py_decrypt(ct, [a])[0] == plaintext
    assert py_decrypt(ct, [b])[0] == plaintext
    ct = py_encrypt(plaintext, [a, b])
    assert keyward_decrypt(tmp_path, ct, [a])[1] == plaintext
    assert keyward_decrypt(tmp_path, ct, [b])[1] == plaintext


def test_mixed_namespaces(tmp_path, rsa_private_pem):
    a = aes_key(tmp_path, namespace="aes-ns", name="a")
    r = rsa_key(tmp_path, "oaep-sha1", rsa_private_pem)
    plaintext = os.urandom(100)
    ct = keyward_encrypt(tmp_path, plaintext, [a, r])
    assert py_decrypt(ct, [a])[0] == plaintext
    assert py_decrypt(ct, [r])[0] == plaintext


@pytest.mark.parametrize("context", [
    {},
    {f"key-{i}": "v" * 200 for i in range(40)},
    {"テナント": "東京", "emoji": "🔐", "é": "e\u0301", "mixed": "Zürich ∑"},
])
def test_encryption_contexts(tmp_path, context):
    key = aes_key(tmp_path)
    plaintext = os.urandom(300)
    ct = keyward_encrypt(tmp_path, plaintext, [key], "0x0578", 128, context)
    pt, header = py_decrypt(ct, [key])
    assert pt == plaintext
    assert {k: v for k, v in header.encryption_context.items() if not k.startswith("aws-crypto-")} == context
    ct = py_encrypt(plaintext, [key], "0x0578", 128, context)
    required = [x for k, v in context.items() for x in ("--context", f"{k}={v}")]
    r, out = keyward_decrypt(tmp_path, ct, [key], required)
    assert r.returncode == 0, r.stderr.decode()
    assert out == plaintext


@pytest.mark.parametrize("algorithm", V1_SUITES, ids=lambda a: hex(a.algorithm_id))
@pytest.mark.parametrize("frame", [0, 512])
def test_v1_messages(tmp_path, algorithm, frame):
    key = aes_key(tmp_path)
    plaintext = os.urandom(1500)
    ct = py_encrypt(plaintext, [key], frame_length=frame, policy=CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT,
                    algorithm=algorithm, context={"v": "1"})
    assert ct[0] == 1
    r, out = keyward_decrypt(tmp_path, ct, [key], ["--commitment-policy", "require-encrypt-allow-decrypt"])
    assert r.returncode == 0, r.stderr.decode()
    assert out == plaintext
    r, out = keyward_decrypt(tmp_path, ct, [key, ], ["--commitment-policy", "forbid-encrypt-allow-decrypt"])
    assert out == plaintext
    r, out = keyward_decrypt(tmp_path, ct, [key])
    assert r.returncode == 1 and out is None
    assert b"commitment" in r.stderr
