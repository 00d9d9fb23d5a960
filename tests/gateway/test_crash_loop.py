"""kill -9 under load, again and again (issue 24): clients chat (streamed and not) and upload
files while the server is killed at a random moment, restarted, and checked: every exchange and
file whose answer a client received is there and reads back as it was; one round in three kills
it during a re-key, which resumes. At the end `keyward audit verify` passes and SQLite's
integrity_check is ok. CI runs 3 rounds; `scripts/crash-loop [ROUNDS]` runs more (20 by default)."""
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
import uuid

import openai

from keyward_paths import keyward_bin

ROUNDS = int(os.environ.get("KEYWARD_CRASH_ROUNDS", "3"))


class Load:
    """Clients that keep the server busy and note what it acknowledged."""

    def __init__(self, g, token, threads=4):
        self.g, self.token = g, token
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.completions = {}  # id -> the prompt's marker
        self.files = {}  # id -> bytes
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]
        for t in self.threads:
            t.start()

    def run(self, i):
        c = self.g.openai(self.token, timeout=10)
        while not self.stop.is_set():
            marker = uuid.uuid4().hex
            try:
                if i == 0:
                    data = os.urandom(random.randint(1, 300_000))
                    f = c.files.create(file=("d.bin", data), purpose="user_data")
                    with self.lock:
                        self.files[f.id] = data
                elif i == 1:
                    chunks = list(c.chat.completions.create(model="mock-1", stream=True,
                                                            messages=[{"role": "user", "content": marker}]))
                    with self.lock:  # the client saw the whole stream, [DONE] included
                        self.completions[chunks[0].id] = marker
                else:
                    r = c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": marker}])
                    with self.lock:
                        self.completions[r.id] = marker
            except (openai.APIError, OSError):
                time.sleep(0.05)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)


def check(g, token, completions, files):
    c = g.openai(token, timeout=30)
    for cid, marker in completions.items():
        stored = c.chat.completions.retrieve(cid)
        assert stored.choices[0].message.content == f"echo: {marker}", cid
    for fid, data in files.items():
        assert c.files.content(fid).read() == data, fid


def test_kill_9_under_load_loses_nothing_acknowledged(fresh_gateway, upstream):
    rng = random.Random(int(os.environ.get("KEYWARD_CRASH_SEED", "7")))
    g = fresh_gateway()
    token = g.new_tenant("crashy", store="always")
    acknowledged = ({}, {})
    rekeys = during = 0
    for round in range(ROUNDS):
        load = Load(g, token)
        time.sleep(rng.uniform(0.5, 2.0))
        job = None
        if round % 3 == 2:
            key = f"crashy{round}"
            out = subprocess.run([keyward_bin(), "keys", "create", f"local:{key}", "--keystore", f"{g.data}/keys"],
                                 capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            status, body, _ = g.as_role("key-admin", "POST", "/admin/v1/tenants/crashy/rekey", {"key": f"local:{key}"})
            assert status == 202, body
            job = body["job"]
            time.sleep(rng.uniform(0.0, 0.3))
            status, state, _ = g.as_role("key-admin", "GET", f"/admin/v1/jobs/{job}")
            during += state.get("status") == "running"
        g.proc.send_signal(signal.SIGKILL)
        g.proc.wait(10)
        load.finish()
        g.stdout.close()
        g.stderr.close()
        acknowledged[0].update(load.completions)
        acknowledged[1].update(load.files)
        g.start()
        if job:
            done = g.wait_job(job, timeout=120)
            assert done["status"] == "done", done
            rekeys += 1
        check(g, token, *acknowledged)
        print(f"round {round + 1}: {len(acknowledged[0])} exchanges and {len(acknowledged[1])} files acknowledged so far, all there")
    assert acknowledged[0] and acknowledged[1], "nothing was acknowledged: the load did not run"
    assert g.stop() == 0
    out = subprocess.run([keyward_bin(), "audit", "verify", "--data", g.data], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    with sqlite3.connect(os.path.join(g.data, "keyward.sqlite3")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    print(f"{ROUNDS} kills, {rekeys} of them just after a re-key began ({during} with the job seen running just before): "
          f"{len(acknowledged[0])} exchanges, {len(acknowledged[1])} files, "
          f"audit verify ok, integrity_check ok")
