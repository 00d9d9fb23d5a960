"""Where the binaries under test are (a module of its own: tests/interop has a conftest too)."""
import os

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def keyward_bin():
    return os.environ.get("KEYWARD_BIN") or os.path.join(ROOT, ".build", "debug", "keyward")


def bench_bin():
    return os.path.join(os.path.dirname(keyward_bin()), "keyward-bench")
