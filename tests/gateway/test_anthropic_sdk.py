"""The official `anthropic` Python SDK against the gateway's /v1/messages."""
import sqlite3

import anthropic
import pytest


@pytest.fixture(scope="module")
def token(gateway):
    return gateway.new_tenant("claudeco")


def stored_kinds(gateway, record_id):
    db = sqlite3.connect(f"file:{gateway.data}/keyward.sqlite3?mode=ro", uri=True)
    try:
        return sorted(k for (k,) in db.execute("SELECT kind FROM records WHERE tenant = 'claudeco' AND id = ?",
                                                (record_id,)))
    finally:
        db.close()


def test_messages(gateway, token, upstream):
    client = gateway.anthropic(token)
    raw = client.messages.with_raw_response.create(
        model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "bonjour"}])
    message = raw.parse()
    assert message.content[0].text == "echo: bonjour"
    assert message.usage.output_tokens == 7
    # The gateway sends the configured provider key as x-api-key, never the client's token.
    assert upstream.keys_seen()[-1] == upstream.api_key
    record_id = raw.headers["x-keyward-record-id"]
    assert stored_kinds(gateway, record_id) == ["messages.request", "messages.response"]


def test_messages_stream(gateway, token):
    client = gateway.anthropic(token)
    with client.messages.stream(model="claude-test", max_tokens=50,
                                messages=[{"role": "user", "content": "un deux trois"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: un deux trois"
    assert final.stop_reason == "end_turn"


def test_openai_model_on_messages_route_is_refused(gateway, token):
    with pytest.raises(anthropic.BadRequestError):
        gateway.anthropic(token).messages.create(model="mock-1", max_tokens=5,
                                                 messages=[{"role": "user", "content": "x"}])
