"""`keyward` CLI runs for the remote key stores' tests, with only the environment given (nothing of
this process's KEYWARD_, VAULT_ or BAO_ variables leaks in)."""
import os
import subprocess

from esdk import keyward_binary


def kw(env, *args):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "KEYWARD_"))}
    return subprocess.run([keyward_binary(), *args], env={**base, **env}, capture_output=True, timeout=120)


def encrypt(env, tmp_path, data, key, context=(), suite="0x0578", name="m"):
    """Encrypts `data` into tmp_path/NAME.enc (removed first): (result, path)."""
    src, dst = tmp_path / f"{name}.plain", tmp_path / f"{name}.enc"
    src.write_bytes(data)
    if dst.exists():
        dst.unlink()
    args = ["encrypt", "-i", str(src), "-o", str(dst), "--wrapping-key", key, "--algorithm", suite]
    for c in context:
        args += ["--context", c]
    return kw(env, *args), dst


def decrypt(env, tmp_path, enc, key):
    """Decrypts `enc`: (result, plaintext or None)."""
    out = tmp_path / "decrypted.out"
    if out.exists():
        out.unlink()
    r = kw(env, "decrypt", "-i", str(enc), "-o", str(out), "--wrapping-key", key)
    return r, (out.read_bytes() if out.exists() else None)
