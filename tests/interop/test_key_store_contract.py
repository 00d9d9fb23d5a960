"""One contract every key store keeps, each against its real peer: the local store, AWS KMS (moto),
PKCS#11 (SoftHSM2), Vault Transit (OpenBao) and KMIP (PyKMIP). Through the CLI: create and show,
a round trip, a message that another key of the store does not open, rotation that keeps old
messages readable, disable that refuses at once (and enable, where the store has a way back),
key_not_found for a key that is not there, and no credential in any output."""
import os
import re
import subprocess

import pytest

from keyward_cli import decrypt, encrypt, kw
from kmip_peer import PyKMIP
from kms_peers import Moto
from vault_peer import Bao

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


class Local:
    name = "local"
    can_enable = True
    enforces_state = True

    def __init__(self, tmp):
        self.env = {"KEYWARD_KEYSTORE": str(tmp / "store")}
        self.secrets = []

    def create(self, label):
        return self.made(kw(self.env, "keys", "create", f"local:{label}"))

    def made(self, r):
        assert r.returncode == 0, r.stderr
        return r.stdout.split()[0].decode()

    def missing(self):
        return "local:not-there"

    def stop(self):
        pass


class AWSKMS(Local):
    name = "aws-kms"
    # moto does not enforce key states on Encrypt/Decrypt (test_aws_kms.py covers them through a
    # proxy answering as AWS does).
    enforces_state = False

    def __init__(self, tmp):
        self.server = Moto()
        self.env = {"AWS_ENDPOINT_URL_KMS": self.server.url, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "contract-secret-key", "AWS_REGION": "us-east-1"}
        self.secrets = ["contract-secret-key"]

    def create(self, label):
        return self.made(kw(self.env, "keys", "create", "aws-kms", "--description", label))

    def missing(self):
        return "aws-kms:arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"

    def stop(self):
        self.server.stop()


class PKCS11(Local):
    name = "pkcs11"

    def __init__(self, tmp):
        (tmp / "tokens").mkdir()
        conf = tmp / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {tmp / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
        self.env = {"SOFTHSM2_CONF": str(conf)}
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "kw", "--pin", "7391", "--so-pin", "5678"],
                       check=True, capture_output=True, env={**os.environ, **self.env})
        (tmp / "pin").write_text("7391\n")
        self.query = f"module-path={MODULE}&pin-source={tmp / 'pin'}"
        self.secrets = ["7391"]

    def create(self, label):
        self.made(kw(self.env, "keys", "create", f"pkcs11:token=kw;object={label}?{self.query}"))
        return f"pkcs11:token=kw;object={label}?{self.query}"

    def missing(self):
        return f"pkcs11:token=kw;object=not-there?{self.query}"


class Transit(Local):
    name = "vault-transit"

    def __init__(self, tmp):
        self.server = Bao()
        self.env = self.server.env()
        self.secrets = [self.server.root_token]

    def create(self, label):
        return self.made(kw(self.env, "keys", "create", f"vault-transit:{label}"))

    def missing(self):
        return "vault-transit:not-there"

    def stop(self):
        self.server.stop()


class KMIP(Local):
    name = "kmip"
    can_enable = False  # Revoke is final in KMIP

    def __init__(self, tmp):
        self.server = PyKMIP()
        self.env = self.server.env()
        # The client's private key: its base64 lines must not appear anywhere.
        self.secrets = [line for line in open(self.env["KEYWARD_KMIP_KEY"]).read().splitlines() if not line.startswith("-----")]

    def create(self, label):
        return self.made(kw(self.env, "keys", "create", f"kmip:name={label}"))

    def missing(self):
        return "kmip:name=not-there"

    def stop(self):
        self.server.stop()


@pytest.fixture(params=[Local, AWSKMS, PKCS11, Transit, KMIP], ids=lambda c: c.name)
def store(request, tmp_path):
    s = request.param(tmp_path)
    yield s
    s.stop()


def test_the_key_store_contract(store, tmp_path):
    env = store.env
    key, other = store.create("contract"), store.create("contract-other")
    outputs = []

    shown = kw(env, "keys", "show", key)
    outputs.append(shown)
    assert shown.returncode == 0 and re.match(rb"\S+ state=enabled", shown.stdout), shown.stdout + shown.stderr

    data = b"the contract " * 300
    r, enc = encrypt(env, tmp_path, data, key, context=["tenant=contract"], name="first")
    outputs.append(r)
    assert r.returncode == 0, r.stderr
    r, out = decrypt(env, tmp_path, enc, key)
    outputs.append(r)
    assert out == data, r.stderr

    # Another key of the same store does not open it.
    r, out = decrypt(env, tmp_path, enc, other)
    outputs.append(r)
    assert r.returncode == 1 and out is None and b"no_decryptable_key" in r.stderr, r.stderr

    # Rotation makes a new version (where the store counts them); the old message still opens, and so does a new one.
    versions = re.search(rb"versions=(\d+)", shown.stdout)
    r = kw(env, "keys", "rotate", key)
    outputs.append(r)
    assert r.returncode == 0, r.stderr
    if versions:
        assert f"versions={int(versions.group(1)) + 1}".encode() in kw(env, "keys", "show", key).stdout
    assert decrypt(env, tmp_path, enc, key)[1] == data
    r, newer = encrypt(env, tmp_path, b"after rotation", key, name="second")
    assert r.returncode == 0, r.stderr
    assert decrypt(env, tmp_path, newer, key)[1] == b"after rotation"

    # Disable refuses at once; enable (where there is a way back) restores.
    r = kw(env, "keys", "disable", key)
    outputs.append(r)
    assert r.returncode == 0, r.stderr
    assert b"state=disabled" in kw(env, "keys", "show", key).stdout
    if store.enforces_state:
        r, out = decrypt(env, tmp_path, enc, key)
        outputs.append(r)
        assert r.returncode == 1 and out is None and b"key_disabled" in r.stderr, r.stderr
    r = kw(env, "keys", "enable", key)
    outputs.append(r)
    if store.can_enable:
        assert r.returncode == 0, r.stderr
        assert decrypt(env, tmp_path, enc, key)[1] == data
    else:
        assert r.returncode != 0

    r = kw(env, "keys", "show", store.missing())
    outputs.append(r)
    assert r.returncode != 0 and b"key_not_found" in r.stderr, r.stderr

    for r in outputs:
        for secret in store.secrets:
            assert secret.encode() not in r.stdout + r.stderr
