"""The official `openai` Python SDK against the gateway, with the mock upstream behind it."""
import time
import uuid

import openai
import pytest


@pytest.fixture(scope="module")
def acme(gateway):
    return gateway.new_tenant("acme")


@pytest.fixture(scope="module")
def client(gateway, acme):
    return gateway.openai(acme)


def test_chat_is_answered_stored_and_readable(client):
    words = f"hello {uuid.uuid4().hex}"
    r = client.chat.completions.create(model="mock-1", messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": words}], temperature=0.2)
    assert r.choices[0].message.content == "echo: " + words
    assert r.id.startswith("chatcmpl-") and r.id != "upstream-id"
    assert r.usage.prompt_tokens == 4 and r.usage.completion_tokens == 6
    assert r.system_fingerprint == "fp_mock"  # other fields pass through

    got = client.chat.completions.retrieve(r.id)
    assert got.id == r.id and got.choices[0].message.content == "echo: " + words

    msgs = client.chat.completions.messages.list(r.id)
    assert [m.content for m in msgs.data] == ["be brief", words]
    assert [m.role for m in msgs.data] == ["system", "user"]
    page = client.chat.completions.messages.list(r.id, limit=1, order="desc")
    assert [m.content for m in page.data] == [words] and page.has_more

    listed = [c.id for c in client.chat.completions.list(limit=100)]
    assert r.id in listed

    deleted = client.chat.completions.delete(r.id)
    assert deleted.deleted and deleted.id == r.id
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.delete(r.id)


def test_list_paginates_with_after_and_has_more(gateway):
    client = gateway.openai(gateway.new_tenant("pager"))
    ids = [client.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": f"n{i}"}]).id
           for i in range(5)]
    first = client.chat.completions.list(limit=2)
    assert [c.id for c in first.data] == ids[:2] and first.has_more
    second = client.chat.completions.list(limit=2, after=ids[1])
    assert [c.id for c in second.data] == ids[2:4]
    everything = [c.id for c in client.chat.completions.list(limit=2)]  # the SDK follows the pages
    assert everything == ids
    newest = client.chat.completions.list(limit=1, order="desc")
    assert [c.id for c in newest.data] == [ids[-1]]


def test_streaming_is_forwarded_chunk_by_chunk(client):
    words = "one two three four"
    start = time.monotonic()
    arrivals, pieces, ids = [], [], set()
    stream = client.chat.completions.create(model="mock-drip", stream=True,
                                            messages=[{"role": "user", "content": words}])
    for chunk in stream:
        ids.add(chunk.id)
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - start)
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == "echo: " + words
    # The mock sleeps 0.4 s before each of 5 words: the first reaches us long before the last.
    assert arrivals[-1] - arrivals[0] > 1.2, arrivals
    assert len(ids) == 1
    (record_id,) = ids
    assert record_id.startswith("chatcmpl-")
    stored = client.chat.completions.retrieve(record_id)
    assert stored.choices[0].message.content == "echo: " + words
    assert stored.choices[0].finish_reason == "stop"


def test_streaming_usage_chunk_is_kept(client):
    stream = client.chat.completions.create(model="mock-1", stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "a b"}])
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == 3
    stored = client.chat.completions.retrieve(chunks[0].id)
    assert stored.usage.completion_tokens == 3


def test_tool_calls_pass_through(client):
    r = client.chat.completions.create(
        model="mock-tools", messages=[{"role": "user", "content": "weather"}],
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}])
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and call.function.arguments == '{"q": "weather"}'
    assert r.choices[0].finish_reason == "tool_calls"


def test_echo_model_needs_no_upstream(client, upstream):
    before = upstream.count
    r = client.chat.completions.create(model="keyward/echo", messages=[{"role": "user", "content": "ping"}])
    assert r.choices[0].message.content == "ping"
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="keyward/echo", stream=True, messages=[{"role": "user", "content": "ping pong"}]) if c.choices)
    assert text == "ping pong"
    assert upstream.count == before


def test_models_lists_upstream_models_and_echo(client):
    ids = {m.id for m in client.models.list()}
    assert {"mock-1", "mock-2", "keyward/echo"} <= ids


def test_embeddings_are_forwarded(client):
    r = client.embeddings.create(model="mock-embed", input=["abc", "de"])
    assert [d.embedding for d in r.data] == [[0.25, -0.5, 3.0], [0.25, -0.5, 2.0]]


def test_bad_token_is_401(gateway):
    with pytest.raises(openai.AuthenticationError) as e:
        gateway.openai("kw_not-a-token").chat.completions.create(model="mock-1", messages=[])
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    # An admin token is not an app token.
    with pytest.raises(openai.PermissionDeniedError):
        gateway.openai(gateway.admin_token).models.list()


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nobody-serves-this", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"


def test_malformed_json_says_where(gateway, acme):
    status, body, _ = gateway.request("POST", "/v1/chat/completions", raw=b'{"model": "mock-1", "messages": [}',
                                      token=acme)
    assert status == 400 and body["error"]["code"] == "invalid_json"
    assert "character 33" in body["error"]["message"]
    status, body, _ = gateway.request("POST", "/v1/chat/completions", {"messages": []}, token=acme)
    assert status == 400 and "model" in body["error"]["message"]


def test_body_over_the_limit_is_413(gateway, acme, upstream):
    before = upstream.count
    # Just over, and 40 MiB over: urllib sends the whole body before it reads, so the rest must be
    # drained for the answer to reach it (it blocked until its time-out before).
    for size in (70000, 40 << 20):
        big = {"model": "mock-1", "messages": [{"role": "user", "content": "x" * size}]}
        began = time.monotonic()
        status, body, _ = gateway.request("POST", "/v1/chat/completions", big, token=acme)
        assert status == 413 and body["error"]["code"] == "request_too_large"
        assert time.monotonic() - began < 10
    assert upstream.count == before


def test_upstream_errors_keep_their_meaning(client, upstream):
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="mock-429", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 429 and "slow down" in e.value.message
    assert e.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="mock-500", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 502 and "provider broke" in e.value.message
    # A redirect is not followed: it would carry the provider key elsewhere.
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="mock-redirect", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 502
    assert "/stolen" not in [r[0] for r in upstream.state.requests]
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="mock-slow", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 504 and e.value.code == "upstream_timeout"


def test_store_policies(gateway, upstream):
    on_request = gateway.openai(gateway.new_tenant("optin", store="on-request"))
    r = on_request.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "x"}])
    assert r.id == "upstream-id"  # not stored: the upstream's id, untouched
    assert on_request.chat.completions.list().data == []
    r = on_request.chat.completions.create(model="mock-1", store=True, messages=[{"role": "user", "content": "y"}])
    assert on_request.chat.completions.retrieve(r.id).choices[0].message.content == "echo: y"

    never = gateway.openai(gateway.new_tenant("nostore", store="never"))
    r = never.chat.completions.create(model="mock-1", store=True, messages=[{"role": "user", "content": "z"}])
    assert r.id == "upstream-id" and never.chat.completions.list().data == []


def test_response_headers_report_overhead(gateway, acme):
    status, _, headers = gateway.request("POST", "/v1/chat/completions",
                                         {"model": "mock-1", "messages": [{"role": "user", "content": "h"}]}, token=acme)
    assert status == 200
    assert float(headers["x-keyward-overhead-ms"]) >= 0 and float(headers["x-keyward-key-ms"]) >= 0
    assert headers["x-keyward-record-id"].startswith("chatcmpl-")


def test_health_readiness_and_metrics(gateway):
    assert gateway.request("GET", "/healthz")[0] == 200
    status, body, _ = gateway.request("GET", "/readyz")
    assert status == 200 and body["checks"]["database"] == "ok" and body["checks"]["keystore:local"] == "ok"
    status, text, _ = gateway.request("GET", "/metrics")
    text = text.decode()
    assert status == 200
    assert 'keyward_http_requests_total{route="/v1/chat/completions",method="POST",status="200"}' in text
    assert "keyward_keystore_calls_total" in text and "keyward_datakey_cache_total" in text
    assert "keyward_upstream_duration_seconds_bucket" in text
