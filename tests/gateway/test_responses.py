"""OpenAI's Responses API through `keyward serve`, with the official `openai` SDK: every turn is
kept by Keyward, encrypted under the tenant's key, and the upstream (the mock's stateless
Responses API, configured `"api": "responses"`) gets each turn's whole context with `store: false`
and never a `previous_response_id`."""
import json
import sqlite3
import subprocess
import time
import urllib.parse
import uuid

import openai
import pytest

from keyward_paths import keyward_bin
from test_security import scan


def turn(client, text, previous=None, **kw):
    return client.responses.create(model=kw.pop("model", "resp-1"), input=text, previous_response_id=previous, **kw)


def test_a_five_turn_chain_is_rebuilt_from_keywards_records(fresh_gateway, upstream):
    g = fresh_gateway()
    token = g.new_tenant("agent")
    client = g.openai(token)
    marker = "turn-CANARY-" + uuid.uuid4().hex
    before = len(upstream.bodies("/v1/responses"))
    ids = []
    for i in range(5):
        r = turn(client, f"{marker} {i}", ids[-1] if ids else None, instructions="be brief")
        assert r.output_text == f"echo: {marker} {i}"
        assert r.id.startswith("resp_") and r.id != "resp_upstream"
        assert r.previous_response_id == (ids[-1] if ids else None)
        ids.append(r.id)
    sent = upstream.bodies("/v1/responses")[before:]
    assert len(sent) == 5
    for i, body in enumerate(sent):
        assert body["store"] is False and "previous_response_id" not in body and "conversation" not in body
        assert "reasoning.encrypted_content" in body["include"]
        # Turn i gets every earlier input and output, oldest first, then its own input.
        texts = [item["content"] if isinstance(item["content"], str) else item["content"][0]["text"] for item in body["input"]]
        expected = []
        for k in range(i):
            expected += [f"{marker} {k}", f"echo: {marker} {k}"]
        assert texts == expected + [f"{marker} {i}"], texts

    # Read back: the response as answered, its input items, deletion.
    again = client.responses.retrieve(ids[2])
    assert again.output_text == f"echo: {marker} 2" and again.previous_response_id == ids[1]
    items = client.responses.input_items.list(ids[2])
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [("message", "user", f"{marker} 2")]
    # Paged, newest first unless asked otherwise, as OpenAI lists input items.
    multi = client.responses.create(model="resp-1", input=[{"role": "user", "content": t} for t in ("a", "b", "c")])
    page = client.responses.input_items.list(multi.id, limit=2)
    assert [i.content[0].text for i in page.data] == ["c", "b"] and page.has_more
    rest = client.responses.input_items.list(multi.id, limit=2, after=page.data[-1].id)
    assert [i.content[0].text for i in rest.data] == ["a"] and not rest.has_more
    assert [i.content[0].text for i in client.responses.input_items.list(multi.id, order="asc").data] == ["a", "b", "c"]
    client.responses.delete(ids[4])
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(ids[4])
    # Another tenant sees none of it, and cannot continue the chain.
    other = g.openai(g.new_tenant("other"))
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(ids[0])
    with pytest.raises(openai.NotFoundError):
        turn(other, "steal", ids[3])
    count = upstream.count
    with pytest.raises(openai.NotFoundError):
        turn(client, "no such turn", "resp_nothing")
    assert upstream.count == count

    g.stop()
    assert scan([g.data, g.tmp], [marker]) == []
    for log in (g.stdout_path, g.stderr_path):
        assert marker.encode() not in open(log, "rb").read()
    db = sqlite3.connect(f"file:{g.data}/keyward.sqlite3?mode=ro", uri=True)
    kinds = db.execute("SELECT kind, count(*) FROM records WHERE tenant='agent' GROUP BY kind ORDER BY kind").fetchall()
    assert kinds == [("response", 5), ("response.input", 5)]
    # The chain is in the input record's clear metadata (ids only), so a turn's context is one query.
    chain = json.loads(db.execute("SELECT metadata FROM records WHERE id = ? AND kind = 'response.input'", (ids[3],)).fetchone()[0])["chain"]
    assert chain == ids[:3]
    assert "chain" not in json.loads(db.execute("SELECT metadata FROM records WHERE id = ? AND kind = 'response'", (ids[3],)).fetchone()[0])


def test_a_streamed_turn_is_forwarded_and_stored_assembled(fresh_gateway, upstream):
    g = fresh_gateway()
    client = g.openai(g.new_tenant("streamer"))
    first = turn(client, "hello there")
    events = list(client.responses.create(model="resp-1", input="stream me please", previous_response_id=first.id, stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.output_text.delta" in types
    rid = events[-1].response.id
    assert all(e.response.id == rid for e in events if hasattr(e, "response")) and rid.startswith("resp_")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: stream me please"
    stored = client.responses.retrieve(rid)
    assert stored.output_text == text and stored.previous_response_id == first.id
    # The next turn continues from the streamed one.
    after = turn(client, "and then", rid)
    sent = upstream.bodies("/v1/responses")[-1]
    assert [i.get("content") if isinstance(i.get("content"), str) else i["content"][0]["text"] for i in sent["input"]] == [
        "hello there", "echo: hello there", "stream me please", "echo: stream me please", "and then"]
    assert after.output_text == "echo: and then"


def test_a_function_calling_loop_and_reasoning_are_replayed(fresh_gateway, upstream):
    g = fresh_gateway()
    client = g.openai(g.new_tenant("tooluser"))
    tools = [{"type": "function", "name": "lookup", "description": "look it up",
              "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]
    asked = turn(client, "what is the weather", model="resp-tools", tools=tools)
    call = next(o for o in asked.output if o.type == "function_call")
    assert call.name == "lookup" and json.loads(call.arguments) == {"q": "what is the weather"}
    answered = client.responses.create(model="resp-tools", tools=tools, previous_response_id=asked.id,
                                       input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert answered.output_text == "tool said: sunny"
    sent = upstream.bodies("/v1/responses")[-1]["input"]
    assert [i.get("type", "message") for i in sent] == ["message", "function_call", "function_call_output"]
    assert sent[1]["call_id"] == call.call_id

    # Reasoning comes back encrypted (Keyward asks for it when it stores) and is replayed as it came.
    r1 = turn(client, "think", model="resp-reason")
    reasoning = next(o for o in r1.output if o.type == "reasoning")
    assert reasoning.encrypted_content == "opaque-1"
    turn(client, "think more", r1.id, model="resp-reason")
    replayed = upstream.bodies("/v1/responses")[-1]["input"]
    assert {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque-1"} in replayed


def test_revocation_store_false_and_untranslatable_items(fresh_gateway, upstream):
    g = fresh_gateway()
    client = g.openai(g.new_tenant("revoked"))
    kept = turn(client, "remember me")
    # A tenant that stores on request only: store false keeps nothing, and nothing can continue it.
    lean = g.openai(g.new_tenant("lean", store="on-request"))
    r = turn(lean, "forget me", store=False)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        lean.responses.retrieve(r.id)
    # An item no translation has a form for: refused, nothing sent.
    count = upstream.count
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="claude-x", input=[{"type": "web_search_call", "id": "ws_1", "status": "completed"}])
    assert e.value.code == "unsupported_item" and upstream.count == count
    # Revoked: 403 for a new turn, a continuation and a read, before any upstream call.
    path = "/admin/v1/keys/" + urllib.parse.quote("local:revoked", safe="") + "/disable"
    assert g.as_role("key-admin", "POST", path)[0] == 200
    count = upstream.count
    for attempt in (lambda: turn(client, "again"), lambda: turn(client, "again", kept.id), lambda: client.responses.retrieve(kept.id)):
        with pytest.raises(openai.PermissionDeniedError) as e:
            attempt()
        assert e.value.code == "key_revoked"
    assert upstream.count == count


def test_a_chain_continues_across_a_rekey_and_a_restart(fresh_gateway, upstream):
    g = fresh_gateway()
    token = g.new_tenant("mover")
    client = g.openai(token)
    ids = [turn(client, "one").id]
    ids.append(turn(client, "two", ids[-1]).id)
    out = subprocess.run([keyward_bin(), "keys", "create", "local:mover2", "--keystore", f"{g.data}/keys"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    status, body, _ = g.as_role("key-admin", "POST", "/admin/v1/tenants/mover/rekey", {"key": "local:mover2"})
    assert status == 202, body
    assert g.wait_job(body["job"])["status"] == "done"
    # The old key can go: every turn of the chain is under the new one now.
    assert g.as_role("key-admin", "POST", "/admin/v1/keys/local%3Amover/disable")[0] == 200
    ids.append(turn(client, "three", ids[-1]).id)
    g.stop()
    g.start()
    client = g.openai(token)
    r = turn(client, "four", ids[-1])
    texts = [i["content"] if isinstance(i["content"], str) else i["content"][0]["text"] for i in upstream.bodies("/v1/responses")[-1]["input"]]
    assert texts == ["one", "echo: one", "two", "echo: two", "three", "echo: three", "four"]
    assert r.output_text == "echo: four"
    assert client.responses.retrieve(ids[0]).output_text == "echo: one"


def test_conversations_kept_by_keyward_and_continued_by_responses(fresh_gateway, upstream):
    g = fresh_gateway()
    client = g.openai(g.new_tenant("talker"))
    marker = "conv-CANARY-" + uuid.uuid4().hex
    conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": f"{marker} hello"}],
                                       metadata={"topic": "weather"})
    assert conv.id.startswith("conv_") and conv.metadata == {"topic": "weather"}
    assert client.conversations.retrieve(conv.id).metadata == {"topic": "weather"}
    assert client.conversations.update(conv.id, metadata={"topic": "sun"}).metadata == {"topic": "sun"}
    added = client.conversations.items.create(conv.id, items=[{"type": "message", "role": "user", "content": "second"},
                                                              {"type": "message", "role": "user", "content": "third"}])
    assert [i.content[0].text for i in added.data] == ["second", "third"]

    # A response continues the conversation: the upstream gets every item (without the ids Keyward
    # gave the client's own messages), and the turn's input and output become its next items.
    r = client.responses.create(model="resp-1", conversation=conv.id, input="what now")
    assert r.output_text == "echo: what now" and r.conversation.id == conv.id
    sent = upstream.bodies("/v1/responses")[-1]
    assert sent["store"] is False and "conversation" not in sent
    assert [i["content"][0]["text"] if isinstance(i["content"], list) else i["content"] for i in sent["input"]] == [
        f"{marker} hello", "second", "third", "what now"]
    assert all("id" not in i for i in sent["input"])
    r2 = client.responses.create(model="resp-1", conversation={"id": conv.id}, input="and then")
    assert [i["content"][0]["text"] if isinstance(i["content"], list) else i["content"] for i in upstream.bodies("/v1/responses")[-1]["input"]] == [
        f"{marker} hello", "second", "third", "what now", "echo: what now", "and then"]
    assert r2.output_text == "echo: and then"

    # Listed newest first by default, paged, one by one, deleted one by one.
    items = client.conversations.items.list(conv.id, limit=3)
    assert [i.content[0].text for i in items.data] == ["echo: and then", "and then", "echo: what now"] and items.has_more
    assert [i.content[0].text for i in client.conversations.items.list(conv.id, order="asc").data] == [
        f"{marker} hello", "second", "third", "what now", "echo: what now", "and then", "echo: and then"]
    second = client.conversations.items.list(conv.id, order="asc").data[1]
    assert client.conversations.items.retrieve(second.id, conversation_id=conv.id).content[0].text == "second"
    assert client.conversations.items.delete(second.id, conversation_id=conv.id).id == conv.id
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(second.id, conversation_id=conv.id)
    assert "second" not in [i.content[0].text for i in client.conversations.items.list(conv.id, order="asc").data]

    # Another tenant sees none of it; bad input is refused; deleting it deletes its items.
    other = g.openai(g.new_tenant("eavesdropper"))
    with pytest.raises(openai.NotFoundError):
        other.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="resp-1", conversation=conv.id, input="steal")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="resp-1", conversation=conv.id, previous_response_id=r.id, input="both")
    with pytest.raises(openai.BadRequestError):
        client.conversations.items.create(conv.id, items=["not an object"])
    client.conversations.delete(conv.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)
    g.stop()
    db = sqlite3.connect(f"file:{g.data}/keyward.sqlite3?mode=ro", uri=True)
    assert db.execute("SELECT count(*) FROM records WHERE id = ?", (conv.id,)).fetchone()[0] == 0
    assert scan([g.data, g.tmp], [marker]) == []


def test_a_turn_without_input_continues_its_context_and_background_mode_is_refused(fresh_gateway, upstream):
    """As OpenAI's SDK allows: a turn with no `input` continues a conversation (after the app added
    its items) or a chain as they stand. Background mode, which Keyward cannot keep (a turn is
    stored as its answer ends), and retrieving a response as a stream are refused, not ignored."""
    g = fresh_gateway()
    client = g.openai(g.new_tenant("continuer"))
    conv = client.conversations.create()
    client.conversations.items.create(conv.id, items=[{"type": "message", "role": "user", "content": "added by the app"}])
    r = client.responses.create(model="resp-1", conversation=conv.id)
    assert r.output_text == "echo: added by the app"
    assert [i.content[0].text for i in client.conversations.items.list(conv.id, order="asc").data] == [
        "added by the app", "echo: added by the app"]
    first = turn(client, "alone")
    again = client.responses.create(model="resp-1", previous_response_id=first.id)
    assert again.output_text == "echo: alone" and again.previous_response_id == first.id
    assert [i["content"] for i in upstream.bodies("/v1/responses")[-1]["input"]][0] == "alone"
    assert client.responses.input_items.list(again.id).data == []
    before = len(upstream.bodies("/v1/responses"))
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="resp-1")
    assert e.value.code == "missing_field"
    with pytest.raises(openai.BadRequestError) as e:  # nothing to continue
        client.responses.create(model="resp-1", conversation=client.conversations.create().id)
    assert e.value.code == "missing_field"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="resp-1", input="later", background=True)
    assert e.value.code == "unsupported"
    assert len(upstream.bodies("/v1/responses")) == before
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.retrieve(first.id, stream=True)
    assert e.value.code == "unsupported"
    assert client.responses.retrieve(first.id).output_text == "echo: alone"


def test_a_deleted_turn_is_left_out_of_later_contexts(fresh_gateway, upstream):
    g = fresh_gateway()
    client = g.openai(g.new_tenant("forgetful"))
    a = turn(client, "first")
    b = turn(client, "second", a.id)
    client.responses.delete(a.id)
    turn(client, "third", b.id)
    texts = [i["content"] if isinstance(i["content"], str) else i["content"][0]["text"] for i in upstream.bodies("/v1/responses")[-1]["input"]]
    assert texts == ["second", "echo: second", "third"]


def test_a_turn_logs_one_event_for_the_context_it_read(fresh_gateway, upstream):
    """A continued turn's context (every earlier turn's two records, or a conversation's items) is
    read after one `decrypt_record` event naming what was continued and every turn it read, not
    one event per record; a client's own reads keep one event per record."""
    g = fresh_gateway()
    client = g.openai(g.new_tenant("deep"))
    ids = []
    for i in range(4):
        ids.append(turn(client, f"turn {i}", ids[-1] if ids else None).id)
    client.responses.delete(ids[1])
    ids.append(turn(client, "after a deletion", ids[3]).id)
    client.responses.retrieve(ids[4])
    conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": "one"},
                                              {"type": "message", "role": "user", "content": "two"}])
    client.responses.create(model="resp-1", conversation=conv.id, input="three")
    db = sqlite3.connect(f"file:{g.data}/keyward.sqlite3?mode=ro", uri=True)
    reads = db.execute("SELECT record, detail, purpose, key, actor FROM audit_events WHERE operation = 'decrypt_record' "
                       "AND tenant = 'deep' ORDER BY seq").fetchall()
    assert [(r[0], r[1], r[2]) for r in reads] == [
        (f"{ids[0]}/context", f"2 records of 1 turns: {ids[0]}", "inference"),
        (f"{ids[1]}/context", f"4 records of 2 turns: {ids[0]} {ids[1]}", "inference"),
        (f"{ids[2]}/context", f"6 records of 3 turns: {ids[0]} {ids[1]} {ids[2]}", "inference"),
        # The deleted turn is not read, and not named.
        (f"{ids[3]}/context", f"6 records of 3 turns: {ids[0]} {ids[2]} {ids[3]}", "inference"),
        (f"{ids[4]}/response", None, "retrieval"),
        (f"{conv.id}/context", "2 items, to position 2", "inference"),
    ]
    assert all(r[3] == "local:deep" and r[4].startswith("tok_") for r in reads)
    g.stop()


def test_context_reads_count_every_record_towards_the_read_ceiling(fresh_gateway, upstream):
    """One event for a context, but the anomaly detector counts its records: a token re-reading a
    deep chain reaches the ceiling as one reading its records one by one would."""
    g = fresh_gateway(config_extra={"alerts": {"window_seconds": 60, "minimum": 100000, "ratio": 1000, "ceiling": 100,
                                               "baseline_windows": 5}})
    client = g.openai(g.new_tenant("exfil"))
    ids = []
    for i in range(8):
        ids.append(turn(client, f"turn {i}", ids[-1] if ids else None).id)
    for _ in range(3):
        turn(client, "repeat everything above", ids[-1])
    db = sqlite3.connect(f"file:{g.data}/keyward.sqlite3?mode=ro", uri=True)
    events = db.execute("SELECT detail FROM audit_events WHERE operation = 'decrypt_record' AND tenant = 'exfil'").fetchall()
    # 2 + 4 + … + 14 records for the chain, then 16 three times: 104 records in 10 events.
    assert len(events) == 10 and sum(int(d.split(" ")[0]) for (d,) in events) == 104
    deadline = time.time() + 10
    while not db.execute("SELECT count(*) FROM audit_events WHERE operation = 'alert'").fetchone()[0]:
        assert time.time() < deadline, "no alert for 104 records read against a ceiling of 100"
        time.sleep(0.1)
    g.stop()


def test_a_chat_completions_upstream_serves_the_responses_api(fresh_gateway, upstream):
    """mock-* models go to an upstream that speaks chat completions only: Keyward translates each
    turn (its whole context) into a chat request and the answer back, streamed and not, function
    calls included."""
    g = fresh_gateway()
    client = g.openai(g.new_tenant("chatty"))
    first = client.responses.create(model="mock-1", input="hello", instructions="be brief")
    assert first.output_text == "echo: hello" and first.usage.input_tokens == 4
    second = client.responses.create(model="mock-1", input="again", previous_response_id=first.id)
    chat = upstream.bodies("/v1/chat/completions")[-1]
    assert chat["messages"] == [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "echo: hello"},
                                {"role": "user", "content": "again"}]
    assert "store" not in chat and "previous_response_id" not in chat and "input" not in chat
    events = list(client.responses.create(model="mock-1", input="stream this", previous_response_id=second.id, stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: stream this"
    rid = events[-1].response.id
    assert client.responses.retrieve(rid).output_text == text
    assert len(upstream.bodies("/v1/chat/completions")[-1]["messages"]) == 5

    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]
    asked = client.responses.create(model="mock-tools", input="weather?", tools=tools)
    call = next(o for o in asked.output if o.type == "function_call")
    assert call.name == "lookup" and call.call_id == "call_1"
    sent = upstream.bodies("/v1/chat/completions")[-1]
    assert sent["tools"] == [{"type": "function", "function": {"name": "lookup", "parameters": tools[0]["parameters"]}}]
    answered = client.responses.create(model="mock-tools", tools=tools, previous_response_id=asked.id,
                                       input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rain"}])
    assert answered.output_text == "tool said: rain"
    messages = upstream.bodies("/v1/chat/completions")[-1]["messages"]
    assert messages[1]["role"] == "assistant" and messages[1]["tool_calls"][0]["id"] == "call_1"
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "rain"}


def test_an_anthropic_upstream_serves_the_responses_api(fresh_gateway, upstream):
    """claude-* models go to an Anthropic upstream: each turn becomes a Messages request (the
    instructions its system prompt, function calls tool_use blocks, their outputs tool_result
    blocks) and the answer, streamed too, Responses output."""
    g = fresh_gateway()
    client = g.openai(g.new_tenant("claudia"))
    first = client.responses.create(model="claude-x", input="hello", instructions="be brief", max_output_tokens=50)
    assert first.output_text == "echo: hello" and first.usage.output_tokens == 7
    sent = upstream.bodies("/v1/messages")[-1]
    assert sent["system"] == "be brief" and sent["max_tokens"] == 50
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    events = list(client.responses.create(model="claude-x", input="stream it", previous_response_id=first.id, stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: stream it"
    assert [m["role"] for m in upstream.bodies("/v1/messages")[-1]["messages"]] == ["user", "assistant", "user"]
    assert client.responses.retrieve(events[-1].response.id).output_text == "echo: stream it"

    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]
    asked = client.responses.create(model="claude-tools", input="weather?", tools=tools)
    call = next(o for o in asked.output if o.type == "function_call")
    assert call.call_id == "toolu_1" and json.loads(call.arguments) == {"q": "weather?"}
    assert upstream.bodies("/v1/messages")[-1]["tools"] == [{"name": "lookup", "input_schema": tools[0]["parameters"]}]
    answered = client.responses.create(model="claude-tools", tools=tools, previous_response_id=asked.id,
                                       input=[{"type": "function_call_output", "call_id": "toolu_1", "output": "snow"}])
    assert answered.output_text == "tool said: snow"
    messages = upstream.bodies("/v1/messages")[-1]["messages"]
    assert messages[1] == {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "weather?"}}]}
    assert messages[2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "snow"}]}


def test_a_record_past_its_expiry_is_served_as_if_the_purge_had_run(fresh_gateway, upstream):
    """The purge deletes expired records hourly; until it does, a stored completion, response or
    conversation past its expiry is 404 to every read, left out of lists, exports and later
    contexts, as it will be once deleted. What has not expired is served as before."""
    g = fresh_gateway()
    token = g.new_tenant("lapsed")
    policy = {"grants": [{"principals": ["tenant:lapsed"], "purposes": ["inference", "retrieval", "export"]}]}
    status, body, _ = g.admin("PUT", f"/admin/v1/keys/{urllib.parse.quote('local:lapsed', safe='')}/policy", policy)
    assert status == 200, body
    client = g.openai(token)
    old_chat = client.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "old"}], store=True)
    new_chat = client.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "new"}], store=True)
    a = turn(client, "first")
    b = turn(client, "second", a.id)
    conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": "hello"}])
    kept = client.conversations.create(items=[{"type": "message", "role": "user", "content": t} for t in ("one", "two", "three", "four")])
    items = client.conversations.items.list(kept.id, order="asc").data
    db = sqlite3.connect(f"{g.data}/keyward.sqlite3", timeout=10)

    def rows(id_):
        return db.execute("SELECT count(*) FROM records WHERE tenant = 'lapsed' AND id = ?", (id_,)).fetchone()[0]
    with db:
        db.executemany("UPDATE records SET expires_at = 1 WHERE tenant = 'lapsed' AND id = ?",
                       [(old_chat.id,), (a.id,), (conv.id,)])
        # Items of a live conversation expire on their own (a retention that was shortened).
        db.executemany("UPDATE records SET expires_at = 1 WHERE tenant = 'lapsed' AND id = ? AND kind LIKE ?",
                       [(kept.id, f"%.{items[1].id}"), (kept.id, f"%.{items[3].id}")])
    # Stored completions: retrieve, messages, list, export; still in the database (not purged).
    for call in (lambda: client.chat.completions.retrieve(old_chat.id), lambda: client.chat.completions.messages.list(old_chat.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert client.chat.completions.retrieve(new_chat.id).id == new_chat.id
    assert [c.id for c in client.chat.completions.list(limit=100)] == [new_chat.id]
    records, end = g.export(token)
    assert old_chat.id not in {r["id"] for r in records} and new_chat.id in {r["id"] for r in records}
    assert a.id not in {r["id"] for r in records} and end["records"] == len(records)
    assert rows(old_chat.id) == 2 and rows(a.id) == 2
    # Responses: retrieve, input items, the list, continuing it; a later turn's context leaves it out.
    for call in (lambda: client.responses.retrieve(a.id), lambda: client.responses.input_items.list(a.id),
                 lambda: turn(client, "again", a.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    status, listed, _ = g.request("GET", "/v1/responses?limit=100", token=token)
    assert status == 200 and [r["id"] for r in listed["data"]] == [b.id], listed
    assert client.responses.retrieve(b.id).id == b.id
    turn(client, "third", b.id)
    texts = [i["content"] if isinstance(i["content"], str) else i["content"][0]["text"] for i in upstream.bodies("/v1/responses")[-1]["input"]]
    assert texts == ["second", "echo: second", "third"]
    # Conversations: the object, its items, a response continuing it.
    for call in (lambda: client.conversations.retrieve(conv.id), lambda: client.conversations.items.list(conv.id),
                 lambda: client.responses.create(model="resp-1", conversation=conv.id, input="more")):
        with pytest.raises(openai.NotFoundError):
            call()
    # A live conversation's expired items: not listed (pages stay full), not served, not in a
    # continuing turn's context; the next items go after the last one stored, expired or not.
    page = client.conversations.items.list(kept.id, order="asc", limit=1)
    assert [i.content[0].text for i in page.data] == ["one"] and page.has_more
    assert [i.content[0].text for i in client.conversations.items.list(kept.id, order="asc", after=items[0].id, limit=1).data] == ["three"]
    assert [i.content[0].text for i in client.conversations.items.list(kept.id, order="asc")] == ["one", "three"]
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(items[1].id, conversation_id=kept.id)
    client.responses.create(model="resp-1", conversation=kept.id, input="five")
    texts = [i["content"] if isinstance(i["content"], str) else i["content"][0]["text"] for i in upstream.bodies("/v1/responses")[-1]["input"]]
    assert texts == ["one", "three", "five"]
    added = client.conversations.items.create(kept.id, items=[{"type": "message", "role": "user", "content": "six"}])
    assert [i.content[0].text for i in client.conversations.items.list(kept.id, order="asc")] == ["one", "three", "five", "echo: five", "six"]
    assert added.data[0].id == client.conversations.items.list(kept.id, order="desc", limit=1).data[0].id
    # A delete still deletes what has expired: the client asked for it gone.
    assert client.chat.completions.delete(old_chat.id).deleted and rows(old_chat.id) == 0
    assert client.responses.delete(a.id) is None and rows(a.id) == 0
    assert client.conversations.delete(conv.id).deleted and rows(conv.id) == 0
