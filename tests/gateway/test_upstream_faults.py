"""An upstream that fails in the middle of an answer (issue 24): reset mid-stream, a stall, a
10 MiB error body. The client gets a clean error (an error event its SDK raises, when streaming),
the partial exchange is kept marked failed, nothing hangs, and the next request is served. The
mock provider is ours (no real provider runs here); the clients are the official SDKs."""
import json
import os
import sqlite3
import time

import anthropic
import openai
import pytest


def upstreams(port, stall_timeout):
    base = f"http://127.0.0.1:{port}"
    return [{"name": "staller", "type": "openai-compatible", "url": base + "/v1", "api_key_env": "MOCK_KEY",
             "models": ["mock-stall"], "timeout_seconds": stall_timeout},
            {"name": "responder", "type": "openai-compatible", "api": "responses", "url": base + "/v1",
             "api_key_env": "MOCK_KEY", "models": ["resp-*"]},
            {"name": "mock", "type": "openai-compatible", "url": base + "/v1", "api_key_env": "MOCK_KEY", "models": ["mock-*"]},
            {"name": "claude", "type": "anthropic", "url": base, "api_key_env": "MOCK_KEY", "models": ["claude-*"]}]


@pytest.fixture
def g(fresh_gateway, upstream):
    return fresh_gateway(config_extra={"upstreams": upstreams(upstream.port, 2)})


def statuses(g):
    """The clear status of each stored chat answer, by record id (read from the database file)."""
    with sqlite3.connect(f"file:{os.path.join(g.data, 'keyward.sqlite3')}?mode=ro", uri=True) as db:
        return {rid: json.loads(m).get("status")
                for rid, m in db.execute("SELECT id, metadata FROM records WHERE kind = 'chat.response'")}


def test_a_stream_reset_mid_answer_ends_with_an_error_event_and_is_kept_as_failed(g):
    c = g.openai(g.new_tenant("cut", store="always"), timeout=20)
    received = []
    started = time.time()
    with pytest.raises(openai.APIError) as e:
        for chunk in c.chat.completions.create(model="mock-cut", stream=True,
                                               messages=[{"role": "user", "content": "one two three"}]):
            received.append(chunk)
    assert time.time() - started < 10
    assert "broke off" in str(e.value)
    assert received and received[0].choices[0].delta.role == "assistant"
    stored = c.chat.completions.retrieve(received[0].id)
    assert stored.choices[0].message.content == "echo:"  # what came before the reset
    # Not cut: the upstream's error is the client's only surprise.
    reply = c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "still here"}])
    assert reply.choices[0].message.content == "echo: still here"
    g.stop()
    assert statuses(g) == {received[0].id: 502, reply.id: 200}


def test_a_reset_before_the_whole_answer_is_502_and_keeps_nothing(g):
    c = g.openai(g.new_tenant("cut-whole", store="always"), timeout=20)
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model="mock-cut", messages=[{"role": "user", "content": "hello"}])
    assert e.value.status_code == 502 and e.value.code == "upstream_unavailable"
    assert c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "next"}]).choices
    g.stop()
    assert list(statuses(g).values()) == [200]


def test_a_stalled_stream_ends_with_a_timeout_event_in_the_upstreams_time(g):
    c = g.openai(g.new_tenant("stall", store="always"), timeout=20)
    received = []
    started = time.time()
    with pytest.raises(openai.APIError) as e:
        for chunk in c.chat.completions.create(model="mock-stall", stream=True, messages=[{"role": "user", "content": "a b c"}]):
            received.append(chunk)
    waited = time.time() - started
    assert 2 <= waited < 8, waited  # the staller's timeout_seconds is 2: any pause longer ends the stream
    assert "stopped answering" in str(e.value)
    assert received
    g.stop()
    assert statuses(g) == {received[0].id: 504}


def test_a_10_mib_error_body_is_a_short_502_and_the_connection_is_not_reused(g):
    c = g.openai(g.new_tenant("huge", store="always"), timeout=20)
    started = time.time()
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model="mock-huge-error", messages=[{"role": "user", "content": "hi"}])
    assert time.time() - started < 10
    assert e.value.status_code == 502
    assert len(json.dumps(e.value.body)) < 4096  # not the provider's 10 MiB
    for i in range(3):  # the pooled connection, with 10 MiB unread on it, must not serve these
        assert c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": f"n{i}"}]).choices[0].message.content == f"echo: n{i}"


def test_an_anthropic_stream_reset_mid_answer_ends_with_an_error_event(g, upstream):
    token = g.new_tenant("cut-claude", store="always")
    client = anthropic.Anthropic(base_url=g.url, api_key=token, max_retries=0, timeout=20)
    with pytest.raises(anthropic.APIError) as e:
        with client.messages.stream(model="claude-cut", max_tokens=50, messages=[{"role": "user", "content": "one two three"}]) as s:
            for _ in s:
                pass
    assert "broke off" in str(e.value)
    assert client.messages.create(model="claude-1", max_tokens=50, messages=[{"role": "user", "content": "x"}]).content


def test_a_responses_stream_reset_mid_answer_ends_with_an_error_event(g):
    """The Responses API's error event (`type: error`, which the SDK yields rather than raises),
    then the end of a complete response."""
    c = g.openai(g.new_tenant("cut-resp", store="always"), timeout=20)
    events = list(c.responses.create(model="resp-cut", input="one two three", stream=True))
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1].type == "error" and events[-1].code == "upstream_unavailable" and "broke off" in events[-1].message
    assert c.responses.create(model="resp-1", input="again").output_text
