"""Schemathesis (issue 24) against the admin API's own document, /admin/v1/openapi.json, once
per role with a token of that role: no 5xx, every status, content type, header and body as the
document says, and every request the document allows accepted (a refusal then is 404 or 409:
the named thing is missing or in the wrong state, never 400). The key references it makes up
name keys on a moto KMS server (which does not have them) or local keys (schemathesis_hooks.py
says how)."""
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop"))
from kms_peers import Moto  # noqa: E402

CHECKS = ",".join(["not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
                   "response_schema_conformance", "positive_data_acceptance"])


@pytest.fixture(scope="module")
def moto():
    m = Moto()
    yield m
    m.stop()


@pytest.mark.parametrize("role", ["admin", "key-admin", "auditor"])
def test_the_admin_api_conforms_to_its_document(fresh_gateway, moto, role, tmp_path):
    g = fresh_gateway(extra_env={"AWS_ENDPOINT_URL_KMS": moto.url, "AWS_ACCESS_KEY_ID": "testing",
                                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"})
    token = g.admin_token if role == "admin" else g.role_token(role)
    examples = os.environ.get("KEYWARD_SCHEMATHESIS_EXAMPLES", "25")
    p = subprocess.run(["st", "run", g.url + "/admin/v1/openapi.json", "-H", f"Authorization: Bearer {token}",
                        "--include-tag", role, "--checks", CHECKS, "--max-examples", examples, "--seed", "1",
                        # The coverage phase's boundary cases do not pass through the hooks.
                        "--phases", "examples,fuzzing",
                        "--report-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env={**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
                            "PYTHONPATH": os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    assert "Tested:" in out


def test_audit_numbers_past_any_integer_are_refused_not_fatal(fresh_gateway):
    """Found by this suite: `since=1.6e308` became an Int64 of milliseconds and trapped, stopping
    the server for any auditor's request."""
    g = fresh_gateway()
    for query in ("since=1.6e308", "after=1e300", "limit=1e300", "since=inf", "since=nan"):
        status, body, _ = g.as_role("auditor", "GET", f"/admin/v1/audit?{query}")
        assert status == 400 and body["error"]["code"] == "invalid_field", (query, status, body)
    status, _, _ = g.request("GET", "/healthz")
    assert status == 200 and g.proc.poll() is None
