"""Soak (issue 24): a paced mixed load on one `keyward serve` — chat, streamed chat, Responses,
stored reads and listings, a small file's upload, download and deletion, admin and audit reads —
for KEYWARD_SOAK_MINUTES windows of KEYWARD_SOAK_WINDOW_SECONDS each. After the warm-up (the
first two windows; the first if there are fewer than five), the server's RSS may grow by at most
10 %, and so may RSS less SQLite's own memory (printed too: SQLite's page cache fills as the
database grows, up to its bound of 16 MiB, at this load's ~4 MiB a minute, so a leak would show
there first), SQLite's memory stays within its bound, the open file descriptors stay flat
(within 8: pooled connections come and go), and no request fails; with real minutes (60 s windows) the p99 latency of the last window must be within
1.5x of the second's. `scripts/soak MINUTES` runs it (with a release build); CI runs a smoke of
four 8-s windows, where the p99 comparison is printed, not asserted (a few hundred requests a
window make a p99 of the machine's noise).

The model upstream is tests/gateway/mock_upstream.py in a process of its own (no provider can run
here), so that its work does not share the load generator's interpreter."""
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from conftest import Gateway

MINUTES = int(os.environ.get("KEYWARD_SOAK_MINUTES", "4"))
WINDOW = float(os.environ.get("KEYWARD_SOAK_WINDOW_SECONDS", "8"))
RATE = float(os.environ.get("KEYWARD_SOAK_RATE", "40"))  # requests a second, all workers together
WORKERS = 4


class ProcessUpstream:
    """The mock upstream in its own process, with the attributes the Gateway fixture reads."""

    def __init__(self):
        self.api_key = "sk-upstream-CANARY-" + uuid.uuid4().hex
        self.tenant_key = "sk-tenant-CANARY-" + uuid.uuid4().hex
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        here = os.path.dirname(__file__)
        self.proc = subprocess.Popen([sys.executable, os.path.join(here, "mock_upstream.py"), str(self.port), self.api_key],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the mock upstream did not start")

    def close(self):
        self.proc.kill()
        self.proc.wait()


class Client:
    """One keep-alive connection; each call returns its latency in seconds, or raises."""

    def __init__(self, url, token):
        host, port = url.split("//")[1].split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.token = token

    def call(self, method, path, body=None, token=None, headers=None, expect=200):
        h = {"authorization": f"Bearer {token or self.token}"}
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h["content-type"] = "application/json"
        h.update(headers or {})
        start = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers=h)
            r = self.conn.getresponse()
            payload = r.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # reconnects on the next request
            raise
        took = time.perf_counter() - start
        assert r.status == expect, (method, path, r.status, payload[:300])
        return took, payload


def storage_memory(g):
    """keyward_storage_memory_bytes: what SQLite's allocator holds (its page cache above all)."""
    text = g.request("GET", "/metrics")[1].decode()
    line = next(line for line in text.splitlines() if line.startswith("keyward_storage_memory_bytes"))
    return float(line.split()[-1])


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else 0.0


def server_figures(pid):
    """RSS, open descriptors, and RSS's parts: anonymous memory (the heap) and file pages (the
    mapped SQLite log among them)."""
    with open(f"/proc/{pid}/status") as f:
        kb = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.startswith(("VmRSS", "RssAnon", "RssFile", "RssShmem"))}
    return kb["VmRSS"], len(os.listdir(f"/proc/{pid}/fd")), kb["RssAnon"], kb["RssFile"] + kb["RssShmem"]


def test_a_paced_mixed_load_leaves_memory_descriptors_and_latency_flat(tmp_path):
    upstream = ProcessUpstream()
    g = Gateway(upstream, str(tmp_path / "soak"), body_limit=1 << 20, extra_env={"KEYWARD_LOG_LEVEL": "info"})
    try:
        run(g)
    finally:
        g.stop()
        upstream.close()


def run(g):
    token = g.new_tenant("soak")
    auditor = g.role_token("auditor")
    windows = MINUTES
    latencies = [[] for _ in range(windows)]
    errors = []
    lock = threading.Lock()
    start = time.monotonic()
    end = start + windows * WINDOW
    interval = WORKERS / RATE

    def worker(n):
        c = Client(g.url, token)
        stored = []
        step = 0
        next_at = time.monotonic() + n * interval / WORKERS
        while True:
            now = time.monotonic()
            if now >= end:
                return
            if next_at > now:
                time.sleep(next_at - now)
            next_at = max(next_at + interval, time.monotonic() - interval)  # paced; no burst to catch up
            step += 1
            kind = step % 10
            try:
                if kind in (0, 1, 2):
                    took, body = c.call("POST", "/v1/chat/completions", {
                        "model": "mock-gpt", "store": True, "messages": [{"role": "user", "content": f"soak {n} {step} " + "x" * 200}]})
                    stored.append(json.loads(body)["id"])
                elif kind == 3:
                    took, _ = c.call("POST", "/v1/chat/completions", {
                        "model": "mock-gpt", "stream": True, "stream_options": {"include_usage": True},
                        "messages": [{"role": "user", "content": f"stream {n} {step} one two three four"}]})
                elif kind == 4 and stored:
                    took, _ = c.call("GET", f"/v1/chat/completions/{stored[-1]}")
                elif kind == 5:
                    took, _ = c.call("GET", "/v1/chat/completions?limit=5")
                elif kind == 6:
                    took, _ = c.call("POST", "/v1/responses", {"model": "resp-a", "input": f"soak {n} {step}"})
                elif kind == 7:
                    boundary = "soak" + uuid.uuid4().hex
                    data = (f"--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nuser_data\r\n"
                            f"--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"s.txt\"\r\n"
                            f"content-type: text/plain\r\n\r\n").encode() + os.urandom(4096) + f"\r\n--{boundary}--\r\n".encode()
                    took, body = c.call("POST", "/v1/files", data, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
                    file_id = json.loads(body)["id"]
                    t2, content = c.call("GET", f"/v1/files/{file_id}/content")
                    assert len(content) == 4096
                    t3, _ = c.call("DELETE", f"/v1/files/{file_id}")
                    took += t2 + t3
                elif kind == 8:
                    took, _ = c.call("GET", "/admin/v1/tenants", token=g.admin_token)
                else:
                    took, _ = c.call("GET", "/admin/v1/audit?limit=20", token=auditor)
                if len(stored) > 50:
                    del stored[:25]
            except Exception as e:  # noqa: BLE001 -- every failure is reported at the end
                with lock:
                    errors.append(repr(e)[:300])
                continue
            w = int((time.monotonic() - start) / WINDOW)
            if w < windows:
                with lock:
                    latencies[w].append(took)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(WORKERS)]
    for t in threads:
        t.start()
    figures = []  # (rss, fds, anonymous, file, sqlite) at each window's end
    for w in range(windows):
        time.sleep(max(0, start + (w + 1) * WINDOW - time.monotonic()))
        figures.append(server_figures(g.proc.pid) + (storage_memory(g),))
    for t in threads:
        t.join(60)

    warm = 2 if windows >= 5 else 1
    rss0, fds0 = figures[warm - 1][:2]
    own0 = rss0 - figures[warm - 1][4]
    print(f"\nsoak: {windows} windows of {WINDOW:.0f} s at {RATE:.0f} requests/s, warm-up {warm} window(s)")
    print("window  requests  p50 ms  p99 ms  rss MiB  (anon  file; sqlite)  fds")
    for w in range(windows):
        lat = latencies[w]
        rss, fds, anon, file, sqlite = figures[w]
        print(f"{w + 1:6d}  {len(lat):8d}  {percentile(lat, 0.5) * 1000:6.1f}  {percentile(lat, 0.99) * 1000:6.1f}"
              f"  {rss / 2**20:7.1f}  ({anon / 2**20:5.1f} {file / 2**20:5.1f}; {sqlite / 2**20:5.1f})  {fds:3d}")
    raw_growth = max(f[0] for f in figures[warm - 1:]) / rss0 - 1
    growth = max(f[0] - f[4] for f in figures[warm - 1:]) / own0 - 1
    sqlite_max = max(f[4] for f in figures)
    fd_drift = max(f[1] for f in figures[warm - 1:]) - fds0
    p99_ratio = percentile(latencies[-1], 0.99) / max(percentile(latencies[1], 0.99), 1e-9)
    print(f"rss growth after warm-up {raw_growth * 100:+.1f} %, less sqlite's memory {growth * 100:+.1f} % (limit +10 % each), "
          f"sqlite's memory at most {sqlite_max / 2**20:.1f} MiB (bound 16 MiB + 16), fds {fds0} -> max {fds0 + fd_drift} (limit +8), "
          f"p99 last/second window {p99_ratio:.2f} (limit 1.5{'' if WINDOW >= 60 else ', not asserted on short windows'}), "
          f"errors {len(errors)}")
    assert not errors, errors[:5]
    assert all(len(lat) > 0 for lat in latencies), "a window without a request"
    assert raw_growth <= 0.10, f"RSS grew {raw_growth * 100:.1f} % after warm-up"
    assert growth <= 0.10, f"RSS less SQLite's memory grew {growth * 100:.1f} % after warm-up"
    assert sqlite_max <= 32 * 2**20, f"SQLite holds {sqlite_max / 2**20:.1f} MiB"
    assert fd_drift <= 8, f"open descriptors grew by {fd_drift}"
    if WINDOW >= 60:
        assert p99_ratio <= 1.5, f"p99 of the last minute is {p99_ratio:.2f}x the second's"
