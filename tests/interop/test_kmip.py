"""kmip: keys in a real PyKMIP server (KMIP 1.4 over mutual TLS 1.2), through the CLI."""
import re
import socket
import ssl
import struct
import threading
import time

import pytest

from keyward_cli import decrypt, encrypt, kw
from kmip_peer import PyKMIP
from kms_peers import free_port


@pytest.fixture(scope="module")
def kmip():
    server = PyKMIP()
    yield server
    server.stop()


def wrapped_key(message):
    """(offset, bytes) of the KMIP-wrapped data key in a message's header: after the encrypted data
    key's provider ID `kmip` and its provider info, a 2-byte length and the ciphertext."""
    at = message.index(b"\x00\x04kmip") + 6
    info_length = struct.unpack(">H", message[at:at + 2])[0]
    at += 2 + info_length
    length = struct.unpack(">H", message[at:at + 2])[0]
    return at + 2, message[at + 2:at + 2 + length]


def test_life_cycle_through_the_cli(kmip):
    env = kmip.env()
    created = kw(env, "keys", "create", "kmip:name=alpha")
    assert created.returncode == 0, created.stderr
    assert re.match(rb"kmip:name=alpha state=enabled versions=1 created=\S+\n", created.stdout), created.stdout
    again = kw(env, "keys", "create", "kmip:name=alpha")
    assert again.returncode == 1 and b"already_exists" in again.stderr
    unnamed = kw(env, "keys", "create", "kmip")
    assert unnamed.returncode == 0, unnamed.stderr
    uid = re.match(rb"kmip:(\S+) state=enabled versions=1", unnamed.stdout).group(1).decode()
    assert kw(env, "keys", "show", f"kmip:{uid}").returncode == 0
    listed = kw(env, "keys", "list", "kmip")
    assert listed.returncode == 0 and f"kmip:{uid} state=enabled".encode() in listed.stdout and b"(name=alpha)" in listed.stdout
    missing = kw(env, "keys", "show", "kmip:name=nothing")
    assert missing.returncode == 1 and b"key_not_found" in missing.stderr


def test_round_trip_by_name_and_by_uid_and_across_a_rotation(kmip, tmp_path):
    env = kmip.env()
    assert kw(env, "keys", "create", "kmip:name=beta").returncode == 0
    data = b"wrapped inside the key manager " * 50
    r, enc = encrypt(env, tmp_path, data, "kmip:name=beta", suite="0x0478")
    assert r.returncode == 0, r.stderr
    assert decrypt(env, tmp_path, enc, "kmip:name=beta")[1] == data
    _, blob = wrapped_key(enc.read_bytes())
    uid = blob[3:3 + struct.unpack(">H", blob[1:3])[0]].decode()
    r, by_uid = encrypt(env, tmp_path, b"by uid", f"kmip:{uid}", name="u")
    assert r.returncode == 0, r.stderr
    assert decrypt(env, tmp_path, by_uid, f"kmip:{uid}")[1] == b"by uid"

    # Rotation: a new key takes the name and wraps from now on; the old one still unwraps.
    r = kw(env, "keys", "rotate", "kmip:name=beta")
    assert r.returncode == 0, r.stderr
    assert b"versions=2" in kw(env, "keys", "show", "kmip:name=beta").stdout
    assert decrypt(env, tmp_path, enc, "kmip:name=beta")[1] == data
    r, newer = encrypt(env, tmp_path, b"newer", "kmip:name=beta", name="n")
    _, newer_blob = wrapped_key(newer.read_bytes())
    assert newer_blob[3:3 + struct.unpack(">H", newer_blob[1:3])[0]].decode() != uid
    assert decrypt(env, tmp_path, newer, "kmip:name=beta")[1] == b"newer"
    # A message wrapped under the name is not opened by another key's UID reference.
    r, out = decrypt(env, tmp_path, newer, f"kmip:{uid}")
    assert r.returncode == 1 and out is None
    r = kw(env, "keys", "rotate", f"kmip:{uid}")
    assert r.returncode != 0 and b"only a key referenced by name" in r.stderr


def test_the_context_is_the_servers_additional_data(kmip, tmp_path):
    """Two messages under one key, their wrapped data keys swapped: the server refuses to unwrap a
    data key under the other message's context (had it unwrapped it, the message's own header
    authentication would fail instead, with another error)."""
    env = kmip.env()
    assert kw(env, "keys", "create", "kmip:name=gamma").returncode == 0
    r, a = encrypt(env, tmp_path, b"a", "kmip:name=gamma", context=["tenant=a"], name="a")
    r, b = encrypt(env, tmp_path, b"b", "kmip:name=gamma", context=["tenant=b"], name="b")
    ma, mb = bytearray(a.read_bytes()), b.read_bytes()
    at, _ = wrapped_key(bytes(ma))
    _, blob_b = wrapped_key(mb)
    ma[at:at + len(blob_b)] = blob_b
    a.write_bytes(bytes(ma))
    r, out = decrypt(env, tmp_path, a, "kmip:name=gamma")
    assert r.returncode == 1 and out is None
    assert b"no_decryptable_key" in r.stderr, r.stderr


def test_disable_revokes_and_is_final(kmip, tmp_path):
    env = kmip.env()
    assert kw(env, "keys", "create", "kmip:name=delta").returncode == 0
    r, enc = encrypt(env, tmp_path, b"delta", "kmip:name=delta")
    assert r.returncode == 0, r.stderr
    assert kw(env, "keys", "disable", "kmip:name=delta").returncode == 0
    assert b"state=disabled" in kw(env, "keys", "show", "kmip:name=delta").stdout
    r, out = decrypt(env, tmp_path, enc, "kmip:name=delta")
    assert r.returncode == 1 and out is None and b"key_disabled" in r.stderr, r.stderr
    r, _ = encrypt(env, tmp_path, b"x", "kmip:name=delta", name="x")
    assert r.returncode == 1 and b"key_disabled" in r.stderr
    r = kw(env, "keys", "enable", "kmip:name=delta")
    assert r.returncode != 0 and b"cannot become active again" in r.stderr


def test_another_clients_keys_are_not_ours(kmip, tmp_path):
    assert kw(kmip.env("other"), "keys", "create", "kmip:name=theirs").returncode == 0
    r, _ = encrypt(kmip.env(), tmp_path, b"x", "kmip:name=theirs")
    assert r.returncode == 1 and b"key_not_found" in r.stderr  # Locate shows a client only its own objects


def test_failures_are_clear_and_fast(kmip, tmp_path):
    r, _ = encrypt({}, tmp_path, b"x", "kmip:name=alpha")
    assert r.returncode != 0 and b"KEYWARD_KMIP_SERVER" in r.stderr
    down = {**kmip.env(), "KEYWARD_KMIP_SERVER": f"127.0.0.1:{free_port()}", "KEYWARD_KMIP_TIMEOUT_MS": "1500"}
    start = time.monotonic()
    r, enc = encrypt(down, tmp_path, b"x", "kmip:name=alpha")
    assert r.returncode == 1 and b"key_unavailable" in r.stderr and not enc.exists()
    assert time.monotonic() - start < 5
    # A CA that did not sign the server's certificate: the handshake fails, nothing is sent.
    wrong_ca = {**kmip.env(), "KEYWARD_KMIP_CA": f"{kmip.pki}/client.crt"}
    r, _ = encrypt(wrong_ca, tmp_path, b"x", "kmip:name=alpha")
    assert r.returncode == 1 and b"key_unavailable" in r.stderr and b"TLS" in r.stderr, r.stderr
    r = kw(kmip.env(), "keys", "show", "kmip:bad id with spaces")
    assert r.returncode != 0 and b"invalid_argument" in r.stderr
    r = kw({**kmip.env(), "KEYWARD_KMIP_KEY": "/nonexistent"}, "keys", "show", "kmip:name=alpha")
    assert r.returncode != 0 and b"cannot be read" in r.stderr


def test_a_certificate_without_client_auth_is_access_denied(kmip, tmp_path):
    r = kw(kmip.env("noeku"), "keys", "show", "kmip:name=alpha")
    assert r.returncode == 1 and b"access_denied" in r.stderr, r.stderr


def test_an_answer_that_does_not_parse(kmip, tmp_path):
    """A TLS server of our own that answers every request with an item of an unknown type, since no
    real KMIP server answers garbage: never a crash, a clear error, nothing written."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(f"{kmip.pki}/server.crt", f"{kmip.pki}/server.key")
    context.load_verify_locations(f"{kmip.pki}/ca.crt")
    context.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True) as t:
                    t.recv(65536)
                    t.sendall(bytes.fromhex("420078 0B 00000008 0000000000000000".replace(" ", "")))
                    t.recv(1)
            except OSError:
                pass
    threading.Thread(target=serve, daemon=True).start()
    try:
        r, enc = encrypt({**kmip.env(), "KEYWARD_KMIP_SERVER": f"127.0.0.1:{port}"}, tmp_path, b"x", "kmip:name=alpha")
        assert r.returncode == 1 and b"key_unavailable" in r.stderr and b"malformed TTLV" in r.stderr, r.stderr
        assert not enc.exists()
    finally:
        listener.close()
