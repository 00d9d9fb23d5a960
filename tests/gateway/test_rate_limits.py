"""Rate limits (issue 24): requests and model tokens per minute, per tenant (the config's defaults,
or the tenant's own through PATCH /admin/v1/tenants/{name}) and per app token (its own, given when
issued or through PATCH /admin/v1/tokens/{id}). Over a limit: 429 `rate_limited` with
`retry-after`, nothing sent upstream, the minute's first refusal audited, every refusal counted in
the metrics. The limits' arithmetic (the sliding estimate, the wait) is tested in
RateWindowsTests; sharing between replicas in test_replicas.py."""
import re

import pytest

CHAT = "/v1/chat/completions"


def chat(g, token, model="mock-gpt", stream=False, usage=True):
    body = {"model": model, "messages": [{"role": "user", "content": "hello there"}]}
    if stream:
        body |= {"stream": True} | ({"stream_options": {"include_usage": True}} if usage else {})
    return g.request("POST", CHAT, body, token=token)


def refused(status, body, headers, limit, perMinute):
    assert status == 429, body
    assert body["error"]["code"] == "rate_limited" and body["error"]["type"] == "rate_limit_error", body
    assert f"limit of {perMinute} {limit}" in body["error"]["message"], body
    assert 1 <= int(headers["retry-after"]) <= 120, headers["retry-after"]
    kind = "tokens" if limit == "model tokens" else "requests"
    assert headers["x-keyward-rate-limit"].endswith(f" {kind}_per_minute={perMinute}"), headers["x-keyward-rate-limit"]
    return int(headers["retry-after"])


def metric(g, scope, limit):
    text = g.request("GET", "/metrics")[1].decode()
    found = re.search(r'keyward_rate_limited_total\{(?:scope="%s",limit="%s"|limit="%s",scope="%s")\} (\d+)' % (scope, limit, limit, scope), text)
    return int(found.group(1)) if found else 0


def audited(g, tenant):
    status, events, _ = g.as_role("auditor", "GET", f"/admin/v1/audit?operation=access&tenant={tenant}")
    assert status == 200, events
    return [e for e in events["data"] if e["result"] == "rate_limited"]


@pytest.fixture(scope="module")
def g(upstream, tmp_path_factory):
    from conftest import Gateway
    gw = Gateway(upstream, str(tmp_path_factory.mktemp("rate")), config_extra={"rate_limits": {"requests_per_minute": 4}})
    yield gw
    gw.stop()


def test_a_tenant_over_the_configured_requests_per_minute_is_refused_before_its_upstream(g, upstream):
    token = g.new_tenant("busy")
    other = g.new_tenant("calm")
    before = upstream.count
    for _ in range(4):
        status, body, _ = chat(g, token)
        assert status == 200, body
    assert upstream.count == before + 4
    for _ in range(5):
        refused(*chat(g, token), "requests", 4)
    # A streamed request is refused the same way, and a second token of the tenant shares its limit.
    second, _ = g.app_token("busy")
    refused(*chat(g, second, stream=True), "requests", 4)
    assert upstream.count == before + 4, "a refused request reached the upstream"
    # Another tenant has a limit of its own; reads of stored records are not model requests.
    assert chat(g, other)[0] == 200
    assert g.request("GET", "/v1/chat/completions", token=token)[0] == 200
    assert metric(g, "tenant", "requests") >= 6
    # One audited refusal a minute (two if the test crossed a minute's boundary), naming the limit.
    events = audited(g, "busy")
    assert 1 <= len(events) <= 2, events
    assert events[0]["detail"] == "tenant requests_per_minute=4" and events[0]["actor"].startswith("tok_")


def test_a_token_of_its_own_limit_is_refused_alone(g, upstream):
    g.new_tenant("shared")
    status, body, _ = g.admin("POST", "/admin/v1/tokens", {"tenant": "shared", "rate_limits": {"requests_per_minute": 1}})
    assert status == 201 and body["rate_limits"] == {"requests_per_minute": 1}, body
    limited, limited_id = body["token"], body["id"]
    free, _ = g.app_token("shared")
    assert chat(g, limited)[0] == 200
    refused(*chat(g, limited), "requests", 1)
    assert chat(g, free)[0] == 200, "the tenant's other token is not held back"
    assert metric(g, "token", "requests") >= 1
    # Raised through the admin API: in force at once (the principal cache is dropped), audited.
    status, body, _ = g.admin("PATCH", f"/admin/v1/tokens/{limited_id}", {"rate_limits": {"requests_per_minute": 3}})
    assert status == 200 and body == {"id": limited_id, "rate_limits": {"requests_per_minute": 3}}, body
    assert chat(g, limited)[0] == 200
    status, events, _ = g.as_role("auditor", "GET", "/admin/v1/audit?operation=token_update")
    assert any(e["detail"] == f"id={limited_id} rate_limits={{requests_per_minute=3}}" for e in events["data"]), events
    # Only app tokens have limits.
    auditor_id = g.admin("POST", "/admin/v1/tokens", {"role": "auditor"})[1]["id"]
    assert g.admin("PATCH", f"/admin/v1/tokens/{auditor_id}", {"rate_limits": {}})[0] == 404
    assert g.admin("POST", "/admin/v1/tokens", {"role": "auditor", "rate_limits": {"requests_per_minute": 1}})[0] == 400


def test_model_tokens_are_counted_from_the_upstreams_usage(g, upstream):
    # The mock answers each chat with usage 4 + 6 = 10 tokens (streamed: 4 + one per word).
    token = g.new_tenant("wordy", rate_limits={"tokens_per_minute": 25, "requests_per_minute": 100})
    for stream in (False, True):
        assert chat(g, token, stream=stream)[0] == 200
    assert chat(g, token)[0] == 200, "under 25 after two answers: a third may go"
    before = upstream.count
    refused(*chat(g, token), "model tokens", 25)
    assert upstream.count == before
    assert metric(g, "tenant", "tokens") >= 1
    events = audited(g, "wordy")
    assert events and events[0]["detail"] == "tenant tokens_per_minute=25", events


def test_a_stream_without_usage_is_counted_from_its_bytes(g, upstream):
    """A streamed chat whose client did not ask for usage carries no counts: a quarter of its
    request's and answer's bytes is counted instead, so a stream cannot pass a tokens limit."""
    token = g.new_tenant("quiet", rate_limits={"tokens_per_minute": 40, "requests_per_minute": 100})
    status, body, _ = chat(g, token, stream=True, usage=False)
    assert status == 200 and b"data: [DONE]" in body and b'"usage"' not in body, body
    refused(*chat(g, token), "model tokens", 40)


def test_anthropic_prompt_cache_tokens_are_counted(g):
    # 5 input + 7 output + 40 read from the cache + 8 written to it = 60 of a limit of 50.
    token = g.new_tenant("cached", rate_limits={"tokens_per_minute": 50, "requests_per_minute": 100})
    status, body, _ = g.request("POST", "/v1/messages", {"model": "claude-cached", "max_tokens": 10,
                                                         "messages": [{"role": "user", "content": "hi"}]}, token=token)
    assert status == 200 and body["usage"]["cache_read_input_tokens"] == 40, body
    refused(*chat(g, token), "model tokens", 50)


def test_anthropic_messages_and_responses_are_limited_too(g, upstream):
    token = g.new_tenant("mixed", rate_limits={"requests_per_minute": 2})
    status, body, _ = g.request("POST", "/v1/messages", {"model": "claude-x", "max_tokens": 10,
                                                         "messages": [{"role": "user", "content": "hi"}]}, token=token)
    assert status == 200, body
    status, body, _ = g.request("POST", "/v1/responses", {"model": "resp-a", "input": "hi"}, token=token)
    assert status == 200, body
    before = upstream.count
    refused(*g.request("POST", "/v1/messages", {"model": "claude-x", "max_tokens": 10,
                                                "messages": [{"role": "user", "content": "hi"}]}, token=token), "requests", 2)
    refused(*g.request("POST", "/v1/responses", {"model": "resp-a", "input": "hi"}, token=token), "requests", 2)
    refused(*g.request("POST", "/v1/embeddings", {"model": "mock-embed", "input": "hi"}, token=token), "requests", 2)
    assert upstream.count == before


def test_the_openai_sdk_sees_a_rate_limit_error_with_its_wait(g):
    import openai
    token = g.new_tenant("sdk", rate_limits={"requests_per_minute": 1})
    client = g.openai(token)
    client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 429 and raised.value.code == "rate_limited"
    assert 1 <= int(raised.value.response.headers["retry-after"]) <= 120


def test_tenant_limits_are_changed_returned_to_the_defaults_and_checked(g):
    token = g.new_tenant("grows", rate_limits={"requests_per_minute": 1})
    assert chat(g, token)[0] == 200
    refused(*chat(g, token), "requests", 1)
    status, body, _ = g.admin("PATCH", "/admin/v1/tenants/grows", {"rate_limits": {"requests_per_minute": 3}})
    assert status == 200 and body["rate_limits"] == {"requests_per_minute": 3}, body
    assert chat(g, token)[0] == 200, "a raised limit holds at once"
    status, events, _ = g.as_role("auditor", "GET", "/admin/v1/audit?operation=tenant_update&tenant=grows")
    assert events["data"][-1]["detail"] == "rate_limits={requests_per_minute=3}", events
    # `{}`: back to the configured default (4), which the two requests so far leave room under.
    status, body, _ = g.admin("PATCH", "/admin/v1/tenants/grows", {"rate_limits": {}})
    assert status == 200 and body["rate_limits"] == {}, body
    assert chat(g, token)[0] == 200 and chat(g, token)[0] == 200
    refused(*chat(g, token), "requests", 4)
    # Other settings leave the limits as they are.
    g.admin("PATCH", "/admin/v1/tenants/grows", {"rate_limits": {"tokens_per_minute": 9}})
    status, body, _ = g.admin("PATCH", "/admin/v1/tenants/grows", {"retention_days": 3})
    assert body["rate_limits"] == {"tokens_per_minute": 9}, body
    for bad in ({"requests_per_minute": 0}, {"requests_per_minute": -1}, {"tokens_per_minute": 2 ** 41},
                {"requests_per_minute": "many"}, {"request_per_minute": 5}):
        status, body, _ = g.admin("PATCH", "/admin/v1/tenants/grows", {"rate_limits": bad})
        assert status == 400, (bad, body)
        status, body, _ = g.admin("POST", "/admin/v1/tenants", {"name": "never", "rate_limits": bad})
        assert status == 400, (bad, body)


def test_a_bad_configured_limit_stops_the_server_at_start(fresh_gateway):
    with pytest.raises(RuntimeError) as raised:
        fresh_gateway(config_extra={"rate_limits": {"requests_per_minute": 0}})
    assert "exited" in str(raised.value) and "rate_limits: each limit must be from 1" in str(raised.value)
    with pytest.raises(RuntimeError) as raised:  # a misspelt limit is not no limit
        fresh_gateway(config_extra={"rate_limits": {"request_per_minute": 10}})
    assert "exited" in str(raised.value) and "unknown rate limit request_per_minute" in str(raised.value)
