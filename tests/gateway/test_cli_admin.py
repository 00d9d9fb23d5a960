"""`keyward tenants|tokens` against a running gateway, and the first-start admin token."""
import json
import os
import subprocess
import time

import openai

from keyward_paths import keyward_bin


def cli(gateway, *args, token=None):
    env = {**os.environ, "KEYWARD_ADMIN_TOKEN": token or gateway.admin_token}
    return subprocess.run([keyward_bin(), *args, "--url", gateway.url], env=env, capture_output=True, text=True)


def test_tenants_and_tokens_commands(gateway):
    out = cli(gateway, "tenants", "create", "cli-co", "--store", "on-request", "--retention-days", "7")
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert created["key"] == "local:cli-co" and created["store"] == "on-request" and created["retention_days"] == 7
    out = cli(gateway, "tenants", "create", "cli-co")
    assert out.returncode == 1 and "already_exists" in out.stderr

    listed = json.loads(cli(gateway, "tenants", "list").stdout)
    assert "cli-co" in [t["name"] for t in listed["data"]]

    issued = json.loads(cli(gateway, "tokens", "create", "--tenant", "cli-co").stdout)
    client = gateway.openai(issued["token"])
    assert client.chat.completions.create(model="keyward/echo", messages=[{"role": "user", "content": "hi"}])
    out = cli(gateway, "tokens", "delete", issued["id"])
    assert out.returncode == 0, out.stderr
    try:
        client.models.list()
        raise AssertionError("a deleted token still works")
    except openai.AuthenticationError:
        pass

    out = cli(gateway, "tenants", "list", token="kw_wrong")
    assert out.returncode == 1 and "invalid_api_key" in out.stderr


def test_generated_admin_token_is_printed_once(fresh_gateway):
    g = fresh_gateway(extra_env={"KEYWARD_ADMIN_TOKEN": ""})
    time.sleep(0.2)
    printed = open(g.stdout_path).read()
    token = printed.strip().split()[-1]
    assert token.startswith("kw_")
    assert token not in open(g.stderr_path).read()
    assert g.request("GET", "/admin/v1/tenants", token=token)[0] == 200
    g.stop()
    g.start()  # second start: nothing printed again, the same token works
    assert open(g.stdout_path).read() == printed
    assert g.request("GET", "/admin/v1/tenants", token=token)[0] == 200
