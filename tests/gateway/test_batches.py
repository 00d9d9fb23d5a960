"""Batches (issue 20): OpenAI's Batches API through the official openai SDK against `keyward
serve` and the mock upstream (tests/gateway/mock_upstream.py: a small server of ours, standing in
for a model provider, which cannot run here). Keyward runs each batch itself: the upstream only
ever gets single requests, and the input, the results and the output files are encrypted."""
import json
import os
import signal
import sqlite3
import time
import urllib.parse
import uuid

import openai
import pytest

FAST = {"batches": {"retry_base_seconds": 0.01, "lease_seconds": 3}}


def jsonl(lines):
    return ("\n".join(json.dumps(line) for line in lines) + "\n").encode()


def chat_line(custom_id, text, model="mock-1", url="/v1/chat/completions"):
    return {"custom_id": custom_id, "method": "POST", "url": url,
            "body": {"model": model, "messages": [{"role": "user", "content": text}]}}


def wait(client, batch_id, timeout=120, until=("completed", "failed", "expired", "cancelled")):
    deadline = time.time() + timeout
    while time.time() < deadline:
        b = client.batches.retrieve(batch_id)
        if b.status in until:
            return b
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} is still {b.status} after {timeout} s")


def results(client, file_id):
    return [json.loads(line) for line in client.files.content(file_id).read().splitlines()] if file_id else []


def asked(upstream, marker):
    """How many times the upstream was asked each question that contains `marker`."""
    counts = {}
    for body in upstream.bodies("/v1/chat/completions"):
        text = body["messages"][-1]["content"]
        if marker in text:
            counts[text] = counts.get(text, 0) + 1
    return counts


def test_a_1000_line_batch_runs_to_completion_each_line_once(fresh_gateway, upstream):
    g = fresh_gateway(config_extra=FAST)
    c = g.openai(g.new_tenant("batch-big"))
    marker = "CANARY-" + uuid.uuid4().hex
    data = jsonl(chat_line(f"req-{i}", f"{marker} question {i}") for i in range(1000))
    f = c.files.create(file=("input.jsonl", data), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                         metadata={"project": "secret-" + marker})
    assert (b.object, b.status, b.input_file_id, b.endpoint) == ("batch", "validating", f.id, "/v1/chat/completions")
    done = wait(c, b.id)
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (1000, 1000, 0)
    assert done.error_file_id is None and done.metadata == {"project": "secret-" + marker}
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    out = results(c, done.output_file_id)
    assert [r["custom_id"] for r in out] == [f"req-{i}" for i in range(1000)]  # in input order
    assert all(r["response"]["status_code"] == 200 and r["error"] is None for r in out)
    assert out[7]["response"]["body"]["choices"][0]["message"]["content"] == f"echo: {marker} question 7"
    # Each line reached the upstream once, as a request of its own.
    counts = asked(upstream, marker)
    assert len(counts) == 1000 and set(counts.values()) == {1}
    output = c.files.retrieve(done.output_file_id)
    assert output.purpose == "batch_output" and output.filename == f"{b.id}_output.jsonl"
    assert [x.id for x in c.batches.list()] == [b.id]
    # Nothing of the lines, answers or metadata is kept in the clear.
    g.stop()
    for root, _, names in os.walk(g.workdir):
        for name in names:
            if name.endswith(".log"):
                continue
            with open(os.path.join(root, name), "rb") as fh:
                assert marker.encode() not in fh.read(), os.path.join(root, name)
    for name in ("stdout.log", "stderr.log"):
        assert marker not in open(os.path.join(g.workdir, name), errors="replace").read()


def test_failing_and_flaky_lines_with_embeddings_and_responses(fresh_gateway, upstream):
    g = fresh_gateway(config_extra=FAST)
    c = g.openai(g.new_tenant("batch-mixed"))
    marker = uuid.uuid4().hex
    lines = [chat_line("ok", f"{marker} fine"), chat_line("broken", f"{marker} x", model="mock-500"),
             chat_line("flaky", f"{marker} flaky", model="mock-flaky"), chat_line("nobody", "x", model="no-such-model")]
    f = c.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    done = wait(c, c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                    output_expires_after={"anchor": "created_at", "seconds": 7200}).id)
    assert done.status == "completed"
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (4, 2, 2)
    # Both files expire as asked; the input file does not.
    for made in [c.files.retrieve(done.output_file_id), c.files.retrieve(done.error_file_id)]:
        assert made.expires_at == made.created_at + 7200, made
    assert c.files.retrieve(f.id).expires_at == f.expires_at != f.created_at + 7200
    out = {r["custom_id"]: r for r in results(c, done.output_file_id)}
    errors = {r["custom_id"]: r for r in results(c, done.error_file_id)}
    assert set(out) == {"ok", "flaky"} and set(errors) == {"broken", "nobody"}
    # What the same request sent alone gets: the upstream's 500 is the gateway's 502.
    assert errors["broken"]["response"]["status_code"] == 502
    assert errors["nobody"]["response"]["status_code"] == 404
    assert errors["nobody"]["response"]["body"]["error"]["code"] == "model_not_found"
    # 500 is tried again (5 times in all); the flaky line's 503 once, then answered.
    assert asked(upstream, marker) == {f"{marker} fine": 1, f"{marker} x": 5, f"{marker} flaky": 2}

    f = c.files.create(file=("emb.jsonl", jsonl([
        {"custom_id": "e1", "method": "POST", "url": "/v1/embeddings", "body": {"model": "mock-1", "input": "hello"}}])), purpose="batch")
    done = wait(c, c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h").id)
    assert done.status == "completed"
    assert results(c, done.output_file_id)[0]["response"]["body"]["data"][0]["embedding"] == [0.25, -0.5, 5.0]

    f = c.files.create(file=("resp.jsonl", jsonl([
        {"custom_id": "r1", "method": "POST", "url": "/v1/responses", "body": {"model": "mock-1", "input": "hi there"}}])), purpose="batch")
    done = wait(c, c.batches.create(input_file_id=f.id, endpoint="/v1/responses", completion_window="24h").id)
    assert done.status == "completed"
    body = results(c, done.output_file_id)[0]["response"]["body"]
    assert body["object"] == "response" and body["status"] == "completed"
    # The turn is Keyward's own: it can be read back, and continued.
    assert c.responses.retrieve(body["id"]).id == body["id"]


def test_invalid_input_fails_the_batch_with_line_errors_and_sends_nothing(fresh_gateway, upstream):
    g = fresh_gateway(config_extra=FAST)
    c = g.openai(g.new_tenant("batch-invalid"))
    marker = uuid.uuid4().hex
    data = jsonl([chat_line("a", marker), chat_line("a", marker), {"custom_id": "b", "method": "GET", "url": "/v1/chat/completions",
                                                                   "body": {"model": "m"}},
                  chat_line("c", marker, url="/v1/embeddings")]) + b"not json\n"
    f = c.files.create(file=("bad.jsonl", data), purpose="batch")
    done = wait(c, c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id)
    assert done.status == "failed" and done.failed_at
    assert [(e.line, e.code) for e in done.errors.data] == [
        (2, "duplicate_custom_id"), (3, "invalid_method"), (4, "mismatched_endpoint"), (5, "invalid_json_line")]
    assert all(marker not in (e.message or "") for e in done.errors.data)
    assert asked(upstream, marker) == {}
    # Refused before any batch is made.
    with pytest.raises(openai.BadRequestError):
        c.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="1h")
    for wrong in [{"anchor": "created_at", "seconds": 10}, {"anchor": "last_active_at", "seconds": 3600},
                  {"anchor": "created_at", "seconds": "3600"}, {"seconds": 3600}]:
        with pytest.raises(openai.BadRequestError):
            c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h", output_expires_after=wrong)
    other = c.files.create(file=("notes.txt", b"x"), purpose="user_data")
    with pytest.raises(openai.BadRequestError):
        c.batches.create(input_file_id=other.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        c.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")


def test_cancel_stops_the_batch_within_a_second(fresh_gateway, upstream):
    g = fresh_gateway(config_extra={"batches": {"concurrency": 2}})
    c = g.openai(g.new_tenant("batch-cancel"))
    marker = uuid.uuid4().hex
    f = c.files.create(file=("in.jsonl", jsonl(chat_line(f"l{i}", f"{marker} {i}", model="mock-tick") for i in range(2000))),
                       purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait(c, b.id, until=("in_progress",))
    while sum(asked(upstream, marker).values()) < 20:
        time.sleep(0.05)
    # The runner reads its input again for the files: not deleted under it.
    with pytest.raises(openai.ConflictError):
        c.files.delete(f.id)
    cancelled = c.batches.cancel(b.id)
    assert cancelled.status == "cancelling" and cancelled.cancelling_at
    time.sleep(1)
    sent = sum(asked(upstream, marker).values())
    done = wait(c, b.id, timeout=10)
    time.sleep(0.5)
    assert done.status == "cancelled" and done.cancelled_at
    assert sum(asked(upstream, marker).values()) == sent  # nothing sent a second after the cancel
    out = results(c, done.output_file_id)
    errors = results(c, done.error_file_id)
    assert len(out) == done.request_counts.completed and len(out) + len(errors) == 2000
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert {r["custom_id"] for r in out + errors} == {f"l{i}" for i in range(2000)}
    with pytest.raises(openai.ConflictError):
        c.batches.cancel(b.id)
    assert c.files.delete(f.id).deleted


def test_kill_9_mid_batch_then_restart_completes_with_no_line_sent_twice(fresh_gateway, upstream):
    g = fresh_gateway(config_extra=FAST)
    c = g.openai(g.new_tenant("batch-crash"))
    marker = uuid.uuid4().hex
    n = 300
    f = c.files.create(file=("in.jsonl", jsonl(chat_line(f"k{i}", f"{marker} {i}", model="mock-tick") for i in range(n))),
                       purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    while sum(asked(upstream, marker).values()) < 40:
        time.sleep(0.02)
    g.stop(sig=signal.SIGKILL)
    before = sum(asked(upstream, marker).values())
    assert before < n
    g.start()
    c = g.openai(c.api_key)
    done = wait(c, b.id)
    assert done.status == "completed"
    counts = asked(upstream, marker)
    assert set(counts.values()) == {1}, "a line was sent twice"
    out = results(c, done.output_file_id)
    errors = results(c, done.error_file_id)
    assert sorted(r["custom_id"] for r in out + errors) == sorted(f"k{i}" for i in range(n))
    # Lines in flight at the kill are reported, not sent again (at most a batch's concurrency of them).
    assert all(e["error"]["code"] == "request_interrupted" for e in errors) and len(errors) <= 8
    # Every answer in the output came from the upstream's single answer to that line.
    assert {f"{marker} {r['custom_id'][1:]}" for r in out} <= set(counts)
    print(f"sent before the kill: {before}, interrupted: {len(errors)}")
    assert done.request_counts.completed == len(out) and done.request_counts.failed == len(errors)


def test_other_tenants_and_revoked_keys(fresh_gateway, upstream):
    g = fresh_gateway(config_extra=FAST)
    c = g.openai(g.new_tenant("batch-owner"))
    other = g.openai(g.new_tenant("batch-other"))
    marker = uuid.uuid4().hex
    f = c.files.create(file=("in.jsonl", jsonl(chat_line(f"r{i}", f"{marker} {i}", model="mock-tick") for i in range(400))),
                       purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(b.id)
    with pytest.raises(openai.NotFoundError):
        other.batches.cancel(b.id)
    with pytest.raises(openai.NotFoundError):
        other.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert list(other.batches.list()) == []
    while sum(asked(upstream, marker).values()) < 10:
        time.sleep(0.02)
    ref = urllib.parse.quote("local:batch-owner", safe="")
    status, body, _ = g.as_role("key-admin", "POST", f"/admin/v1/keys/{ref}/disable")
    assert status == 200, body
    sent = sum(asked(upstream, marker).values())
    deadline = time.time() + 10
    while True:
        status, batch, _ = g.request("GET", f"/v1/batches/{b.id}", token=c.api_key)
        assert status == 403 and batch["error"]["code"] == "key_revoked"
        row = g.as_role("auditor", "GET", f"/admin/v1/audit?operation=batch_end")[1]
        if any(e.get("record") == b.id for e in row["data"]):
            break
        assert time.time() < deadline, "the batch did not stop"
        time.sleep(0.1)
    time.sleep(0.5)
    assert sum(asked(upstream, marker).values()) <= sent + 8  # at most the lines already in flight
    with pytest.raises(openai.PermissionDeniedError):
        c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    status, _, _ = g.as_role("key-admin", "POST", f"/admin/v1/keys/{ref}/enable")
    assert status == 200
    done = c.batches.retrieve(b.id)
    assert done.status == "failed" and [e.code for e in done.errors.data] == ["key_revoked"]
    assert done.output_file_id is None and done.error_file_id is None


def test_a_batch_past_its_retention_is_gone_and_purged_once_ended(fresh_gateway, upstream):
    """A batch's metadata is a record under the tenant's retention, and the batch lives as long
    as it: past its expiry the batch is 404 to a retrieve and a cancel and left out of the list,
    as it will be once purged, and the purge deletes its row (it has ended; the storage
    conformance tests show a running batch's row is kept until it ends)."""
    g = fresh_gateway(config_extra={**FAST, "purge_interval_seconds": 3600})  # one purge, at start
    token = g.new_tenant("batch-lapsed")
    c = g.openai(token)
    f = c.files.create(file=("in.jsonl", jsonl([chat_line("a", uuid.uuid4().hex)])), purpose="batch")
    old, kept = (wait(c, c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                          metadata={"project": name}).id) for name in ("old", "kept"))
    assert old.status == kept.status == "completed"
    assert [b.id for b in c.batches.list()] == [kept.id, old.id]
    db = sqlite3.connect(f"{g.data}/keyward.sqlite3", timeout=10)

    def rows(id_):
        return db.execute("SELECT count(*) FROM batches WHERE id = ?", (id_,)).fetchone()[0]
    with db:
        db.execute("UPDATE records SET expires_at = 1 WHERE tenant = 'batch-lapsed' AND id = ? AND kind = 'batch'", (old.id,))
    for call in (lambda: c.batches.retrieve(old.id), lambda: c.batches.cancel(old.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert [b.id for b in c.batches.list()] == [kept.id]
    assert c.batches.retrieve(kept.id).metadata == {"project": "kept"}
    assert rows(old.id) == 1, "not purged yet: the next purge is an hour away"
    # The purge that runs as the gateway starts deletes the ended batch whose record went with it.
    g.stop()
    g.start()
    deadline = time.time() + 10
    while rows(old.id):
        assert time.time() < deadline, "the purge at start did not delete the batch"
        time.sleep(0.05)
    assert rows(kept.id) == 1
    c = g.openai(token)
    assert [b.id for b in c.batches.list()] == [kept.id]
    assert c.batches.retrieve(kept.id).output_file_id == kept.output_file_id
