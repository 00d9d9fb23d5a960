"""The real PyKMIP server (PyPI's `pykmip`: KMIP 1.0-1.4 over TLS 1.2 with client certificates) on
loopback, with a throw-away EC P-256 PKI. PyKMIP needs older versions of its dependencies than the
test suite's own packages, so it lives in a virtual environment of its own, which scripts/test makes
(KEYWARD_PYKMIP_PYTHON names its python)."""
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

from kms_peers import free_port

DEFAULT_PYTHON = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "keyward-tests", "pykmip", "bin", "python")


def pykmip_python():
    python = os.environ.get("KEYWARD_PYKMIP_PYTHON") or DEFAULT_PYTHON
    if not os.access(python, os.X_OK):
        raise RuntimeError(f"no PyKMIP environment at {python}: scripts/test makes it (see its dependencies step)")
    return python


def make_pki(folder):
    """A CA, a server certificate for 127.0.0.1, Keyward's client certificate (clientAuth, which
    PyKMIP requires; its CN becomes the owner of the objects it creates), another client's, and one
    without clientAuth (the handshake succeeds; every request is refused)."""
    def run(*args):
        subprocess.run(args, cwd=folder, check=True, capture_output=True)

    def key(name):
        run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key")

    key("ca")
    run("openssl", "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "2", "-subj", "/CN=Keyward test KMIP CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "ca.crt")
    for name, cn, ext in [
        ("server", "127.0.0.1", "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "keyward", "extendedKeyUsage=clientAuth"),
        ("other", "someone-else", "extendedKeyUsage=clientAuth"),
        ("noeku", "keyward", "subjectAltName=DNS:keyward"),
    ]:
        key(name)
        run("openssl", "req", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}", "-out", f"{name}.csr")
        with open(os.path.join(folder, f"{name}.ext"), "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n" + ext + "\n")
        run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-sha256", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt")


class PyKMIP:
    def __init__(self):
        self.home = tempfile.mkdtemp(prefix="keyward-kmip-")
        self.pki = os.path.join(self.home, "pki")
        os.makedirs(self.pki)
        make_pki(self.pki)
        os.makedirs(os.path.join(self.home, "policies"))
        self.port = free_port()
        config = os.path.join(self.home, "server.conf")
        with open(config, "w") as f:
            f.write(f"""[server]
hostname=127.0.0.1
port={self.port}
certificate_path={self.pki}/server.crt
key_path={self.pki}/server.key
ca_path={self.pki}/ca.crt
auth_suite=TLS1.2
policy_path={self.home}/policies
enable_tls_client_auth=True
logging_level=INFO
database_path={self.home}/pykmip.db
""")
        self.config = config
        self.log = os.path.join(self.home, "server.log")
        self.output = open(os.path.join(self.home, "server.out"), "wb")
        self.start()

    def start(self):
        """Starts the server (again, on the same port and database, after ``halt``)."""
        self.process = subprocess.Popen([pykmip_python(), "-m", "kmip.services.server.server", "-f", self.config, "-l", self.log],
                                        stdout=self.output, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while not self.answers_tls():
            if time.time() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("the PyKMIP server did not start")
            time.sleep(0.2)

    def answers_tls(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(f"{self.pki}/ca.crt")
        context.load_cert_chain(f"{self.pki}/client.crt", f"{self.pki}/client.key")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                with context.wrap_socket(s, server_hostname="127.0.0.1"):
                    return True
        except OSError:
            return False

    def env(self, client="client"):
        """The variables a Keyward process needs to reach this server as `client`."""
        return {"KEYWARD_KMIP_SERVER": f"127.0.0.1:{self.port}", "KEYWARD_KMIP_CA": f"{self.pki}/ca.crt",
                "KEYWARD_KMIP_CERT": f"{self.pki}/{client}.crt", "KEYWARD_KMIP_KEY": f"{self.pki}/{client}.key"}

    def halt(self):
        """Stops the server process, keeping its database: its clients' connections close."""
        if self.process.poll() is None:
            # SIGINT stops its accept loop at once (SIGTERM waits out a 10 s accept time-out).
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)

    def stop(self):
        self.halt()
        self.output.close()
        shutil.rmtree(self.home, ignore_errors=True)
