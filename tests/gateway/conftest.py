"""Fixtures for the gateway tests: a mock upstream and `keyward serve` processes on loopback."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import mock_upstream  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


from keyward_paths import keyward_bin  # noqa: E402,F401  (tests import it from here too)


class Upstream:
    def __init__(self):
        self.api_key = "sk-upstream-CANARY-" + uuid.uuid4().hex
        self.tenant_key = "sk-tenant-CANARY-" + uuid.uuid4().hex  # a provider key a tenant brings
        self.server, self.state = mock_upstream.serve(0, [self.api_key, self.tenant_key])
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def count(self):
        with self.state.lock:
            return len(self.state.requests)

    def bodies(self, path):
        """The JSON bodies of the requests received on `path`, oldest first."""
        with self.state.lock:
            return [json.loads(r[2]) for r in self.state.requests if r[0] == path]

    def keys_seen(self):
        with self.state.lock:
            return [r[1] for r in self.state.requests]

    def close(self):
        self.server.shutdown()


class Gateway:
    """One `keyward serve` process with its own data folder, temp folder and log files."""

    def __init__(self, upstream, workdir, extra_env=None, body_limit=65536, config_extra=None):
        self.workdir = workdir
        self.data = os.path.join(workdir, "data")
        self.tmp = os.path.join(workdir, "tmp")
        os.makedirs(self.tmp, exist_ok=True)
        self.admin_token = "kw-admin-CANARY-" + uuid.uuid4().hex
        self.upstream = upstream
        config = {"body_limit": body_limit, "upstreams": []}
        if upstream:
            base = f"http://127.0.0.1:{upstream.port}"
            config["upstreams"] = [
                {"name": "slowpoke", "type": "openai-compatible", "url": base + "/v1", "api_key_env": "MOCK_KEY",
                 "models": ["mock-slow"], "timeout_seconds": 1},
                {"name": "responder", "type": "openai-compatible", "api": "responses", "url": base + "/v1",
                 "api_key_env": "MOCK_KEY", "models": ["resp-*"]},
                {"name": "mock", "type": "openai-compatible", "url": base + "/v1", "api_key_env": "MOCK_KEY",
                 "models": ["mock-*"]},
                {"name": "claude", "type": "anthropic", "url": base, "api_key_env": "MOCK_KEY",
                 "models": ["claude-*"]},
            ]
        config.update(config_extra or {})
        self.config = os.path.join(workdir, "config.json")
        with open(self.config, "w") as f:
            json.dump(config, f)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
        self.env.update({"KEYWARD_ADMIN_TOKEN": self.admin_token, "TMPDIR": self.tmp, "KEYWARD_LOG_LEVEL": "debug"})
        if upstream:
            self.env["MOCK_KEY"] = upstream.api_key
        self.env.update(extra_env or {})
        self.stdout_path = os.path.join(workdir, "stdout.log")
        self.stderr_path = os.path.join(workdir, "stderr.log")
        self.start()

    def start(self):
        self.stdout = open(self.stdout_path, "ab")
        self.stderr = open(self.stderr_path, "ab")
        start_offset = os.path.getsize(self.stderr_path)
        self.proc = subprocess.Popen(
            [keyward_bin(), "serve", "--data", self.data, "--listen", "127.0.0.1:0", "--config", self.config],
            env=self.env, stdout=self.stdout, stderr=self.stderr, cwd=self.workdir)
        deadline = time.time() + 30
        while time.time() < deadline:
            with open(self.stderr_path, "rb") as f:
                f.seek(start_offset)
                log = f.read().decode(errors="replace")
            if "listening" in log and "address=http" in log:
                self.url = log.split("address=")[-1].split()[0]
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"keyward serve exited {self.proc.returncode}: {log}")
            time.sleep(0.05)
        raise RuntimeError("keyward serve did not start")

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        self.stdout.close()
        self.stderr.close()
        return self.proc.returncode

    def request(self, method, path, body=None, token=None, headers=None, raw=None):
        """Returns (status, parsed JSON or raw bytes, headers)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        if token:
            req.add_header("authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                payload, status, h = r.read(), r.status, r.headers
        except urllib.error.HTTPError as e:
            payload, status, h = e.read(), e.code, e.headers
        try:
            return status, json.loads(payload), h
        except ValueError:
            return status, payload, h

    def admin(self, method, path, body=None):
        return self.request(method, path, body, token=self.admin_token)

    def app_token(self, tenant):
        """A further app token of `tenant`: (token, id)."""
        status, body, _ = self.admin("POST", "/admin/v1/tokens", {"tenant": tenant})
        assert status == 201, body
        return body["token"], body["id"]

    def wait_job(self, job_id, timeout=600):
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, job, _ = self.as_role("key-admin", "GET", f"/admin/v1/jobs/{job_id}")
            assert status == 200, job
            if job["status"] != "running":
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} still running after {timeout} s")

    def export(self, token):
        """All of a tenant's records through the export route: (records, end line)."""
        req = urllib.request.Request(self.url + "/v1/keyward/export", headers={"authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=600) as r:
            lines = [json.loads(line) for line in r.read().splitlines()]
        return lines[:-1], lines[-1]

    def role_token(self, role):
        """A token of `role` (key-admin, auditor, admin), issued once per gateway."""
        cache = self.__dict__.setdefault("_role_tokens", {})
        if role not in cache:
            status, body, _ = self.admin("POST", "/admin/v1/tokens", {"role": role})
            assert status == 201, body
            cache[role] = body["token"]
        return cache[role]

    def as_role(self, role, method, path, body=None):
        return self.request(method, path, body, token=self.role_token(role))

    def new_tenant(self, name, **fields):
        status, body, _ = self.admin("POST", "/admin/v1/tenants", {"name": name, **fields})
        assert status == 201, body
        status, token, _ = self.admin("POST", "/admin/v1/tokens", {"tenant": name, "role": "app"})
        assert status == 201, token
        return token["token"]

    def openai(self, token, **kw):
        import openai
        return openai.OpenAI(base_url=self.url + "/v1", api_key=token, max_retries=0, **kw)

    def anthropic(self, token):
        import anthropic
        return anthropic.Anthropic(base_url=self.url, api_key=token, max_retries=0)


@pytest.fixture(scope="module")
def upstream():
    u = Upstream()
    yield u
    u.close()


@pytest.fixture(scope="module")
def gateway(upstream):
    workdir = tempfile.mkdtemp(prefix="keyward-gw-")
    g = Gateway(upstream, workdir)
    yield g
    g.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def fresh_gateway(upstream, tmp_path):
    """A gateway of the test's own, for tests that stop it or scan its files."""
    gateways = []

    def make(**kw):
        g = Gateway(upstream, str(tmp_path / f"gw{len(gateways)}"), **kw)
        gateways.append(g)
        return g
    yield make
    for g in gateways:
        if g.proc.poll() is None:
            g.stop(sig=signal.SIGKILL)
