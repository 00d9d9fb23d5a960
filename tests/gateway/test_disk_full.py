"""A data folder whose volume fills up (issue 24): the server starts on a small volume, writes
answer 503 and keep nothing partial once it is full, what needs no key goes on (a record's read
is a key operation: without room for its audit record it is refused too), the audit chain stays valid, and
everything resumes by itself once space is freed. The volume is a real 64 MiB tmpfs (mount
needs root, as CI has; the test is skipped, saying so, where it cannot mount)."""
import os
import sqlite3
import subprocess
import time
import uuid

import openai
import pytest

from conftest import Gateway
from keyward_paths import keyward_bin


@pytest.fixture
def small_volume(tmp_path):
    folder = tmp_path / "gw" / "data"
    folder.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(folder)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): needs root")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder):
    """Fills the volume: a file as large as the free space, then small writes into the last bytes."""
    subprocess.run(["dd", "if=/dev/zero", f"of={folder}/filler", "bs=1M"], capture_output=True)
    subprocess.run(["dd", "if=/dev/zero", f"of={folder}/filler-tail", "bs=4k"], capture_output=True)
    st = os.statvfs(folder)
    assert st.f_bavail * st.f_frsize < 1 << 20


def stored_ids(c):
    ids, after = [], None
    while True:
        page = c.chat.completions.list(limit=100, **({"after": after} if after else {}))
        ids += [x.id for x in page.data]
        if not page.has_more:
            return ids
        after = page.data[-1].id


def test_a_full_data_volume_refuses_writes_keeps_reads_and_recovers(upstream, small_volume):
    g = Gateway(upstream, str(small_volume.parent))  # before: exited, the log's preallocation had taken the volume
    try:
        wal = os.path.getsize(small_volume / "keyward.sqlite3-wal") if (small_volume / "keyward.sqlite3-wal").exists() else 0
        assert wal <= 16 << 20, "the log's preallocation leaves most of a small volume free"
        token = g.new_tenant("full", store="always")
        c = g.openai(token, timeout=30)
        kept = {c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "before"}]).id}
        fill(small_volume)
        refused, codes, deadline = 0, set(), time.time() + 120
        while refused < 5:
            assert time.time() < deadline, f"writes still succeed on a full volume after {len(kept)}"
            try:
                kept.add(c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": uuid.uuid4().hex}]).id)
            except openai.APIStatusError as e:
                assert e.status_code == 503, (e.status_code, e.body)
                codes.add(e.code)
                refused += 1
        assert codes <= {"storage_unavailable", "audit_unavailable"}, codes
        # What needs no key goes on. Reading a record is a key operation: answered while its audit
        # record still finds room (the log's preallocated space), else refused (fail closed).
        assert c.models.list().data
        status, _, _ = g.request("GET", "/healthz")
        assert status == 200
        for _ in range(20):
            try:
                assert c.chat.completions.retrieve(next(iter(kept))).id in kept
            except openai.APIStatusError as e:
                assert e.status_code == 503 and e.code == "audit_unavailable", (e.status_code, e.body)
        # Space freed: writes resume without a restart.
        os.remove(small_volume / "filler")
        os.remove(small_volume / "filler-tail")
        deadline = time.time() + 30
        while True:
            try:
                kept.add(c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "after"}]).id)
                break
            except openai.APIStatusError as e:
                assert e.status_code == 503 and time.time() < deadline, (e.status_code, e.body)
                time.sleep(0.5)
        # Every answered exchange is kept and readable, and nothing of the refused ones.
        assert set(stored_ids(c)) == kept
        assert c.chat.completions.retrieve(next(iter(kept))).id in kept
    finally:
        g.stop()
    p = subprocess.run([keyward_bin(), "audit", "verify", "--data", str(small_volume)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    with sqlite3.connect(small_volume / "keyward.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
