"""Helpers around the Python aws-encryption-sdk, the reference implementation our format must match."""
import os
import subprocess

import aws_encryption_sdk
from aws_encryption_sdk import CommitmentPolicy
from aws_encryption_sdk.identifiers import Algorithm, EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider

AES_WRAPPING = {
    16: WrappingAlgorithm.AES_128_GCM_IV12_TAG16_NO_PADDING,
    24: WrappingAlgorithm.AES_192_GCM_IV12_TAG16_NO_PADDING,
    32: WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
}
RSA_WRAPPING = {
    "pkcs1": WrappingAlgorithm.RSA_PKCS1,
    "oaep-sha1": WrappingAlgorithm.RSA_OAEP_SHA1_MGF1,
    "oaep-sha256": WrappingAlgorithm.RSA_OAEP_SHA256_MGF1,
    "oaep-sha384": WrappingAlgorithm.RSA_OAEP_SHA384_MGF1,
    "oaep-sha512": WrappingAlgorithm.RSA_OAEP_SHA512_MGF1,
}
SUITES = {
    "0x0478": Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
    "0x0578": Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
}
V1_SUITES = [
    Algorithm.AES_128_GCM_IV12_TAG16,
    Algorithm.AES_192_GCM_IV12_TAG16,
    Algorithm.AES_256_GCM_IV12_TAG16,
    Algorithm.AES_128_GCM_IV12_TAG16_HKDF_SHA256,
    Algorithm.AES_192_GCM_IV12_TAG16_HKDF_SHA256,
    Algorithm.AES_256_GCM_IV12_TAG16_HKDF_SHA256,
    Algorithm.AES_128_GCM_IV12_TAG16_HKDF_SHA256_ECDSA_P256,
    Algorithm.AES_192_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384,
    Algorithm.AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384,
]


class Key:
    """One wrapping key, as a Keyward SPEC and as a Python WrappingKey."""

    def __init__(self, namespace, name, spec, wrapping_key):
        self.namespace, self.name, self.spec, self.wrapping_key = namespace, name, spec, wrapping_key


def aes_key(tmp_path, namespace="ns", name="aes", size=32):
    material = os.urandom(size)
    path = tmp_path / f"{namespace}-{name}.key"
    path.write_bytes(material)
    wk = WrappingKey(wrapping_algorithm=AES_WRAPPING[size], wrapping_key=material,
                     wrapping_key_type=EncryptionKeyType.SYMMETRIC)
    return Key(namespace, name, f"raw-aes:namespace={namespace},name={name},key=@{path}", wk)


def rsa_key(tmp_path, padding, private_pem, namespace="rsa", name="rsa"):
    path = tmp_path / f"{namespace}-{name}-{padding}.pem"
    path.write_bytes(private_pem)
    wk = WrappingKey(wrapping_algorithm=RSA_WRAPPING[padding], wrapping_key=private_pem,
                     wrapping_key_type=EncryptionKeyType.PRIVATE)
    return Key(namespace, name, f"raw-rsa:namespace={namespace},name={name},key=@{path},padding={padding}", wk)


def provider(*keys):
    """A master key provider holding these keys (one namespace)."""
    namespace = keys[0].namespace
    cls = type("Static", (RawMasterKeyProvider,), {
        "provider_id": namespace,
        "__init__": lambda self, **kw: setattr(self, "_keys", {}),
        "_get_raw_key": lambda self, key_id: self._keys[key_id],
    })
    p = cls()
    for k in keys:
        assert k.namespace == namespace
        p._keys[k.name.encode()] = k.wrapping_key
        p.add_master_key(k.name.encode())
    return p


def client(policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT):
    return aws_encryption_sdk.EncryptionSDKClient(commitment_policy=policy)


def py_encrypt(plaintext, keys, suite="0x0478", frame_length=4096, context=None, policy=None, algorithm=None):
    c = client(policy or CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    ct, _ = c.encrypt(source=plaintext, key_provider=provider(*keys), encryption_context=context or {},
                      algorithm=algorithm or SUITES[suite], frame_length=frame_length)
    return ct


def py_decrypt(ciphertext, keys):
    pt, header = client().decrypt(source=ciphertext, key_provider=provider(*keys))
    return pt, header


def keyward_binary():
    return os.environ.get("KEYWARD_BIN") or os.path.join(
        os.path.dirname(__file__), "..", "..", ".build", "debug", "keyward")


def kw(*args, input=None):
    return subprocess.run([keyward_binary(), *args], input=input, capture_output=True, timeout=120)
