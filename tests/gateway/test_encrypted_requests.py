"""Requests the app encrypted itself (issue 21): the Python aws-encryption-sdk, with a KMS key on a
moto server as the tenant's key, through the shipped httpx transport (clients/python) under the
official openai SDK. Keyward reaches moto through the counting proxy of kms_peers (which only
forwards here), so that its own KMS calls are counted apart from the client's."""
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

import boto3
import httpx
import pytest
from aws_encryption_sdk import CachingCryptoMaterialsManager, CommitmentPolicy, EncryptionSDKClient, LocalCryptoMaterialsCache
from aws_encryption_sdk.identifiers import Algorithm
from aws_encryption_sdk.key_providers.kms import StrictAwsKmsMasterKeyProvider

from conftest import Gateway, keyward_bin

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop"))
from kms_peers import FaultProxy, Moto  # noqa: E402
from keyward_client import KeywardDecryptionError, KeywardEncryptingTransport  # noqa: E402

ESDK = EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)


@pytest.fixture(scope="module")
def kms_env():
    moto = Moto()
    proxy = FaultProxy(moto.port)
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL_KMS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    # The client (this process) talks to moto directly.
    os.environ.update({"AWS_ENDPOINT_URL_KMS": moto.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    yield moto, proxy
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proxy.stop()
    moto.stop()


@pytest.fixture(scope="module")
def enc(kms_env, upstream):
    moto, proxy = kms_env
    workdir = tempfile.mkdtemp(prefix="keyward-enc-")
    g = Gateway(upstream, workdir, extra_env={"AWS_ENDPOINT_URL_KMS": proxy.url, "AWS_ACCESS_KEY_ID": "keyward",
                                              "AWS_SECRET_ACCESS_KEY": "keyward", "AWS_REGION": "us-east-1"})
    kms = boto3.client("kms", region_name="us-east-1", endpoint_url=moto.url)
    g.kms, g.proxy = kms, proxy

    def tenant(name):
        arn = kms.create_key(Description=f"keyward tenant {name}")["KeyMetadata"]["Arn"]
        token = g.new_tenant(name, key=f"aws-kms:{arn}")
        return token, arn

    g.tenant = tenant
    yield g
    g.stop()


def provider(arn):
    return StrictAwsKmsMasterKeyProvider(key_ids=[arn])


def client(g, token, tenant, arn, **kw):
    transport = KeywardEncryptingTransport(tenant=tenant, key_provider=provider(arn), **kw)
    return g.openai(token, http_client=httpx.Client(transport=transport))


def sealed_request(body, tenant, arn, purpose="request", algorithm=Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY):
    """`body` (JSON, or bytes as they are) as one request message."""
    source = body if isinstance(body, bytes) else json.dumps(body).encode()
    ciphertext, header = ESDK.encrypt(source=source, key_provider=provider(arn), algorithm=algorithm,
                                      encryption_context={"keyward:tenant": tenant, "keyward:purpose": purpose})
    return ciphertext, header.message_id.hex()


def post(g, path, token, raw, headers=None):
    return g.request("POST", path, token=token, raw=raw, headers={"content-encoding": "aws-esdk", **(headers or {})})


def test_encrypted_chat_streamed_and_not_through_the_openai_sdk(enc, upstream):
    token, arn = enc.tenant("chat-e2e")
    marker = "CANARY-" + uuid.uuid4().hex
    c = client(enc, token, "chat-e2e", arn)
    answer = c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": f"hello {marker}"}])
    assert marker in answer.choices[0].message.content
    # The upstream got the plaintext request, decrypted by Keyward.
    assert any(marker in json.dumps(b) for b in upstream.bodies("/v1/chat/completions"))
    stream = c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": f"stream {marker}"}], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert marker in text
    # Stored: readable back (plain retrieval of the tenant's own record), and no plaintext on disk.
    assert marker in c.chat.completions.retrieve(answer.id).choices[0].message.content


def test_the_answer_is_an_esdk_message_bound_to_its_request(enc):
    token, arn = enc.tenant("bound")
    marker = "CANARY-" + uuid.uuid4().hex
    message, request_id = sealed_request({"model": "mock-1", "messages": [{"role": "user", "content": marker}]}, "bound", arn)
    status, body, headers = post(enc, "/v1/chat/completions", token, message)
    assert status == 200, body
    assert headers["content-encoding"] == "aws-esdk"
    assert marker.encode() not in body
    plaintext, header = ESDK.decrypt(source=body, key_provider=provider(arn))
    assert header.encryption_context["keyward:tenant"] == "bound"
    assert header.encryption_context["keyward:purpose"] == "response"
    answer = json.loads(plaintext)
    assert answer["keyward_request"] == request_id
    assert marker in answer["choices"][0]["message"]["content"]
    # Streamed: each event's data is the base64 of one message carrying the request's id; [DONE] stays plain.
    message, request_id = sealed_request({"model": "mock-1", "stream": True, "messages": [{"role": "user", "content": marker}]},
                                         "bound", arn)
    status, body, headers = post(enc, "/v1/chat/completions", token, message)
    assert status == 200 and headers["keyward-event-encoding"] == "aws-esdk", body
    data = [line[6:] for line in body.decode().splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    events = [json.loads(ESDK.decrypt(source=base64.b64decode(d), key_provider=provider(arn))[0]) for d in data[:-1]]
    assert events and all(e["keyward_request"] == request_id for e in events)
    assert [e["keyward_seq"] for e in events] == list(range(len(events)))
    assert marker in "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    # A plaintext request may ask for an encrypted answer; errors stay plain.
    status, body, headers = enc.request("POST", "/v1/chat/completions", {"model": "mock-1", "messages": [{"role": "user", "content": "x"}]},
                                        token=token, headers={"accept-encoding": "aws-esdk"})
    assert status == 200 and headers["content-encoding"] == "aws-esdk"
    assert "keyward_request" not in json.loads(ESDK.decrypt(source=body, key_provider=provider(arn))[0])
    status, body, _ = enc.request("POST", "/v1/chat/completions", {"model": "nope", "messages": []}, token=token,
                                  headers={"accept-encoding": "aws-esdk"})
    assert status == 404 and body["error"]["code"] == "model_not_found"
    # An encrypted request's error keeps its status and code, not its message (which may quote the request).
    message, _ = sealed_request({"model": f"nope-{marker}", "messages": []}, "bound", arn)
    status, body, _ = post(enc, "/v1/chat/completions", token, message)
    assert status == 404 and body["error"]["code"] == "model_not_found" and marker not in json.dumps(body), body
    message, _ = sealed_request({"model": "mock-500", "messages": [{"role": "user", "content": marker}]}, "bound", arn)
    status, body, _ = post(enc, "/v1/chat/completions", token, message)
    assert status >= 500 and marker not in json.dumps(body), body


def test_a_signed_message_from_the_sdk_default_suite_is_accepted(enc):
    token, arn = enc.tenant("signed")
    message, request_id = sealed_request({"model": "keyward/echo", "messages": [{"role": "user", "content": "signed"}]}, "signed", arn,
                                         algorithm=Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384)
    status, body, _ = post(enc, "/v1/chat/completions", token, message)
    assert status == 200, body
    assert json.loads(ESDK.decrypt(source=body, key_provider=provider(arn))[0])["keyward_request"] == request_id


def test_responses_and_embeddings_encrypted(enc, upstream):
    token, arn = enc.tenant("agents-e2e")
    marker = "CANARY-" + uuid.uuid4().hex
    c = client(enc, token, "agents-e2e", arn)
    first = c.responses.create(model="resp-1", input=f"first {marker}")
    assert marker in first.output_text
    second = c.responses.create(model="resp-1", input="second", previous_response_id=first.id)
    sent = upstream.bodies("/v1/responses")[-1]
    assert marker in json.dumps(sent["input"]) and "previous_response_id" not in sent
    assert second.output_text == "echo: second"
    stream = c.responses.create(model="resp-1", input=f"streamed {marker}", stream=True)
    done = [e for e in stream if e.type == "response.completed"]
    assert done and marker in done[0].response.output_text
    vectors = c.embeddings.create(model="mock-embed", input=[f"embed {marker}"])
    assert len(vectors.data) == 1 and vectors.data[0].embedding
    assert any(marker in json.dumps(b) for b in upstream.bodies("/v1/embeddings"))


def test_tampering_with_any_byte_is_refused_before_the_upstream(enc, upstream):
    token, arn = enc.tenant("tamper")
    marker = "CANARY-" + uuid.uuid4().hex
    message, _ = sealed_request({"model": "mock-1", "messages": [{"role": "user", "content": marker}]}, "tamper", arn)
    before = upstream.count
    codes = set()
    for i in range(len(message)):
        altered = bytearray(message)
        altered[i] ^= 0x01
        status, body, headers = post(enc, "/v1/chat/completions", token, bytes(altered))
        assert status == 400, (i, status, body)
        assert body["error"]["code"] in ("invalid_ciphertext", "invalid_encryption_context"), (i, body)
        assert marker not in json.dumps(body)
        codes.add(body["error"]["code"])
    for cut in (1, 17, len(message) // 2, len(message) - 1):
        status, body, _ = post(enc, "/v1/chat/completions", token, message[:cut])
        assert status == 400 and body["error"]["code"] == "invalid_ciphertext", (cut, body)
    assert upstream.count == before
    assert codes == {"invalid_ciphertext", "invalid_encryption_context"}
    # The untouched message goes through.
    status, body, _ = post(enc, "/v1/chat/completions", token, message)
    assert status == 200, body


def test_a_message_for_another_tenant_or_purpose_is_refused(enc, upstream):
    token, arn = enc.tenant("ours")
    _, other_arn = enc.tenant("theirs")
    before = upstream.count
    body = {"model": "mock-1", "messages": [{"role": "user", "content": "x"}]}
    message, _ = sealed_request(body, "theirs", arn)
    status, answer, _ = post(enc, "/v1/chat/completions", token, message)
    assert status == 400 and answer["error"]["code"] == "invalid_encryption_context", answer
    assert "keyward:tenant = ours" in answer["error"]["message"] and "theirs" not in answer["error"]["message"]
    message, _ = sealed_request(body, "ours", arn, purpose="response")
    status, answer, _ = post(enc, "/v1/chat/completions", token, message)
    assert status == 400 and answer["error"]["code"] == "invalid_encryption_context", answer
    # The right context under another tenant's key: not opened by this tenant's key.
    message, _ = sealed_request(body, "ours", other_arn)
    status, answer, _ = post(enc, "/v1/chat/completions", token, message)
    assert status == 400 and answer["error"]["code"] == "invalid_ciphertext", answer
    assert upstream.count == before


def test_required_refuses_plaintext_and_revocation_stops_encrypted_requests(enc, upstream):
    token, arn = enc.tenant("strict")
    out = subprocess.run([keyward_bin(), "tenants", "update", "strict", "--encrypted-requests", "required", "--url", enc.url],
                         env={**os.environ, "KEYWARD_ADMIN_TOKEN": enc.admin_token}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["encrypted_requests"] == "required"
    before = upstream.count
    status, body, _ = enc.request("POST", "/v1/chat/completions", {"model": "mock-1", "messages": [{"role": "user", "content": "plain"}]},
                                  token=token)
    assert status == 403 and body["error"]["code"] == "encryption_required", body
    assert upstream.count == before
    c = client(enc, token, "strict", arn)
    assert c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "sealed"}]).choices[0].message.content
    # Sent once before the revocation below, replayed after it: its cached data key is gone too.
    replayed, _ = sealed_request({"model": "mock-1", "messages": [{"role": "user", "content": "replayed"}]}, "strict", arn)
    status, body, _ = post(enc, "/v1/chat/completions", token, replayed)
    assert status == 200, body
    # Settings change as a partial object, audited.
    status, tenant, _ = enc.admin("PATCH", "/admin/v1/tenants/strict", {"retention_days": 3})
    assert status == 200 and tenant["encrypted_requests"] == "required" and tenant["retention_days"] == 3, tenant
    for bad_body in ({"encrypted_requests": "sometimes"}, {}, {"retention_days": -1}):
        status, bad, _ = enc.admin("PATCH", "/admin/v1/tenants/strict", bad_body)
        assert status == 400, (bad_body, bad)
    status, bad, _ = enc.admin("PATCH", "/admin/v1/tenants/nobody", {"store": "never"})
    assert status == 404, bad
    status, events, _ = enc.as_role("auditor", "GET", "/admin/v1/audit?operation=tenant_update&tenant=strict")
    assert status == 200 and len(events["data"]) >= 2, events
    # Revoked: 403 key_revoked and nothing sent, however the request is encrypted.
    ref = urllib.parse.quote("aws-kms:" + arn, safe="")
    status, body, _ = enc.as_role("key-admin", "POST", f"/admin/v1/keys/{ref}/disable")
    assert status == 200, body
    before = upstream.count
    message, _ = sealed_request({"model": "mock-1", "messages": [{"role": "user", "content": "x"}]}, "strict", arn)
    for m in (message, replayed):
        status, body, _ = post(enc, "/v1/chat/completions", token, m)
        assert status == 403 and body["error"]["code"] == "key_revoked", body
    assert upstream.count == before
    status, body, _ = enc.as_role("key-admin", "POST", f"/admin/v1/keys/{ref}/enable")
    assert status == 200, body


def test_a_thousand_requests_with_a_caching_client_cost_keyward_at_most_three_kms_calls(enc):
    token, arn = enc.tenant("bulk")
    cmm = CachingCryptoMaterialsManager(master_key_provider=provider(arn), cache=LocalCryptoMaterialsCache(10),
                                        max_age=600.0, max_messages_encrypted=10_000)
    transport = KeywardEncryptingTransport(tenant="bulk", materials_manager=cmm)
    c = enc.openai(token, http_client=httpx.Client(transport=transport))
    enc.proxy.reset()
    start = time.time()
    for i in range(1000):
        answer = c.chat.completions.create(model="keyward/echo", messages=[{"role": "user", "content": f"bulk {i}"}])
        assert answer.choices[0].message.content == f"bulk {i}"
    elapsed = time.time() - start
    # One Decrypt of the request data key, one data key for answers, one for the stored records.
    assert len(enc.proxy.calls) <= 3, (enc.proxy.calls, elapsed)


def test_a_forged_answer_is_refused_by_the_transport(enc):
    token, arn = enc.tenant("forged")
    transport = KeywardEncryptingTransport(tenant="forged", key_provider=provider(arn))
    other, _ = sealed_request({"keyward_request": "00" * 32, "object": "chat.completion"}, "forged", arn, purpose="response")
    with pytest.raises(KeywardDecryptionError):
        transport.open_answer(other, "11" * 32)


def test_no_marker_on_disk_or_in_logs(enc, upstream):
    token, arn = enc.tenant("canary")
    marker = "CANARY-" + uuid.uuid4().hex
    c = client(enc, token, "canary", arn)
    c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": marker}])
    c.responses.create(model="resp-1", input=marker)
    found = []
    for root, _, files in os.walk(enc.workdir):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                if marker.encode() in f.read():
                    found.append(name)
    assert found == []


def test_keyward_chat_sends_encrypted_and_prints_the_decrypted_answer(enc, upstream):
    token, arn = enc.tenant("cli-chat")
    marker = "CANARY-" + uuid.uuid4().hex
    env = {**os.environ, "KEYWARD_TOKEN": token, "KEYWARD_TENANT": "cli-chat"}
    for extra in ([], ["--stream"]):
        before = upstream.count
        out = subprocess.run([keyward_bin(), "chat", "--url", enc.url, "--model", "mock-1", "--wrapping-key", f"aws-kms:{arn}", *extra, "-"],
                             input=f"from the cli {marker}", env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert marker in out.stdout, (extra, out.stdout)
        assert upstream.count == before + 1
        assert marker in json.dumps(upstream.bodies("/v1/chat/completions")[-1])
    # A key that is not the tenant's: refused as a wrongly keyed body, with a message and no content.
    other = enc.kms.create_key(Description="not the tenant's")["KeyMetadata"]["Arn"]
    out = subprocess.run([keyward_bin(), "chat", "--url", enc.url, "--model", "mock-1", "--wrapping-key", f"aws-kms:{other}", marker],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "invalid_ciphertext" in out.stderr and marker not in out.stderr, out.stderr


def test_content_and_accept_encodings_are_read_strictly(enc, upstream):
    token, arn = enc.tenant("headers")
    plain = {"model": "keyward/echo", "messages": [{"role": "user", "content": "h"}]}
    for odd in ("gzip,;", ";", ",", "aws-esdk;q=0", "identity"):
        status, body, headers = enc.request("POST", "/v1/chat/completions", plain, token=token, headers={"accept-encoding": odd})
        assert status == 200 and "content-encoding" not in headers, (odd, body)
    status, body, headers = enc.request("POST", "/v1/chat/completions", plain, token=token, headers={"accept-encoding": "gzip, AWS-ESDK;q=0.5"})
    assert status == 200 and headers["content-encoding"] == "aws-esdk"
    message, _ = sealed_request(plain, "headers", arn)
    for coding in ("gzip", "aws-esdk, gzip", "br"):
        status, body, _ = enc.request("POST", "/v1/chat/completions", token=token, raw=message, headers={"content-encoding": coding})
        assert status == 415 and body["error"]["code"] == "unsupported_content_encoding", (coding, body)
    status, body, _ = enc.request("POST", "/v1/chat/completions", token=token, raw=message, headers={"content-encoding": "AWS-ESDK"})
    assert status == 200, body


def test_anthropic_messages_encrypted_and_streamed(enc, upstream):
    import anthropic
    token, arn = enc.tenant("claude-e2e")
    marker = "CANARY-" + uuid.uuid4().hex
    transport = KeywardEncryptingTransport(tenant="claude-e2e", key_provider=provider(arn))
    import httpx2  # this anthropic SDK's own httpx fork; the transport serves either
    c = anthropic.Anthropic(base_url=enc.url, api_key=token, max_retries=0, http_client=httpx2.Client(transport=transport))
    answer = c.messages.create(model="claude-1", max_tokens=50, messages=[{"role": "user", "content": f"hi {marker}"}])
    assert marker in answer.content[0].text
    with c.messages.stream(model="claude-1", max_tokens=50, messages=[{"role": "user", "content": f"stream {marker}"}]) as s:
        assert marker in "".join(s.text_stream)


def test_the_transport_refuses_plaintext_answers_and_altered_streams(enc):
    token, arn = enc.tenant("wary")
    def stream_handler(request):
        request_id = ESDK.decrypt(source=request.content, key_provider=provider(arn))[1].message_id.hex()
        events = [ESDK.encrypt(source=json.dumps({"object": "chat.completion.chunk", "keyward_request": request_id, "keyward_seq": seq}).encode(),
                               key_provider=provider(arn), algorithm=Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
                               encryption_context={"keyward:tenant": "wary", "keyward:purpose": "response"})[0]
                  for seq in (0, 2)]  # event 1 dropped on the way
        body = b"".join(b"data: " + base64.b64encode(m) + b"\n\n" for m in events) + b"data: [DONE]\n\n"
        return httpx.Response(200, headers={"content-type": "text/event-stream", "keyward-event-encoding": "aws-esdk"}, content=body)

    def plain_handler(request):
        return httpx.Response(200, json={"object": "chat.completion", "choices": []})

    # httpx's own MockTransport stands in for a proxy that altered what Keyward sent.
    for handler, what in ((plain_handler, "plaintext answer"), (stream_handler, "missing")):
        transport = KeywardEncryptingTransport(tenant="wary", key_provider=provider(arn), transport=httpx.MockTransport(handler))
        with pytest.raises(KeywardDecryptionError, match=what):
            with httpx.Client(transport=transport) as h:
                r = h.post("http://keyward.test/v1/chat/completions", json={"model": "m"})
                list(r.iter_bytes())


def test_the_key_policy_decides_before_a_request_is_opened(enc):
    token, arn = enc.tenant("policy-e2e")
    reader, reader_id = enc.app_token("policy-e2e")
    stranger, _ = enc.app_token("policy-e2e")
    conversation = enc.request("POST", "/v1/conversations", {"metadata": {"topic": "a"}}, token=token)[1]["id"]
    ref = urllib.parse.quote("aws-kms:" + arn, safe="")
    status, body, _ = enc.admin("PUT", f"/admin/v1/keys/{ref}/policy", {"grants": [
        {"principals": [f"token:{reader_id}"], "purposes": ["retrieval"]}]})
    assert status == 200, body
    # A read-back grant is enough to have an encrypted update of a conversation opened (the route wants retrieval).
    message, request_id = sealed_request({"metadata": {"topic": "b"}}, "policy-e2e", arn)
    status, body, _ = post(enc, f"/v1/conversations/{conversation}", reader, message)
    assert status == 200, body
    assert json.loads(ESDK.decrypt(source=body, key_provider=provider(arn))[0])["metadata"] == {"topic": "b"}
    # No grant at all: refused before the key store is asked to unwrap anything.
    enc.proxy.reset()
    message, _ = sealed_request({"metadata": {"topic": "c"}}, "policy-e2e", arn)
    status, body, _ = post(enc, f"/v1/conversations/{conversation}", stranger, message)
    assert status == 403 and body["error"]["code"] == "access_denied", body
    assert "Decrypt" not in enc.proxy.calls, enc.proxy.calls
    # Opened for the reader, an inference route still checks its own purpose.
    message, _ = sealed_request({"model": "mock-1", "messages": [{"role": "user", "content": "x"}]}, "policy-e2e", arn)
    status, body, _ = post(enc, "/v1/chat/completions", reader, message)
    assert status == 403 and body["error"]["code"] == "access_denied", body


def test_a_file_upload_encrypted_by_the_app_is_opened_as_it_streams_and_its_download_sealed(enc):
    token, arn = enc.tenant("enc-files")
    c = client(enc, token, "enc-files", arn)
    data = os.urandom(300_000)
    f = c.files.create(file=("secret.jsonl", data), purpose="batch")
    assert (f.bytes, f.filename, f.purpose) == (len(data), "secret.jsonl", "batch")
    assert c.files.content(f.id).read() == data  # sealed by Keyward, opened by the transport
    status, raw, h = enc.request("GET", f"/v1/files/{f.id}/content", token=token, headers={"accept-encoding": "aws-esdk"})
    assert status == 200 and h["content-encoding"] == "aws-esdk"
    plaintext, header = ESDK.decrypt(source=raw, key_provider=provider(arn))
    assert plaintext == data and header.encryption_context["keyward:purpose"] == "response"
    # The whole multipart body is the message; an altered frame anywhere is refused and nothing is kept.
    boundary = "encfiles"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.bin"\r\n\r\n').encode() \
        + os.urandom(200_000) + f"\r\n--{boundary}--\r\n".encode()
    sealed, _ = sealed_request(body, "enc-files", arn)
    ctype = {"content-type": f"multipart/form-data; boundary={boundary}"}
    for at in (len(sealed) // 2, len(sealed) - 5):
        bad = bytearray(sealed)
        bad[at] ^= 1
        status, answer, _ = post(enc, "/v1/files", token, bytes(bad), ctype)
        assert status == 400 and answer["error"]["code"] == "invalid_ciphertext", answer
    status, answer, _ = post(enc, "/v1/files", token, sealed[:-100], ctype)
    assert status == 400 and answer["error"]["code"] == "invalid_ciphertext", answer
    assert [x.id for x in c.files.list()] == [f.id]
    assert [b for b in os.listdir(os.path.join(enc.data, "blobs", "files", "enc-files"))] == [f.id]
    status, sealed_answer, h = post(enc, "/v1/files", token, sealed, ctype)
    assert status == 200 and h["content-encoding"] == "aws-esdk"
    plaintext, _ = ESDK.decrypt(source=sealed_answer, key_provider=provider(arn))
    assert json.loads(plaintext)["bytes"] == 200_000



def test_a_rate_limit_refuses_an_encrypted_request_before_it_is_opened(enc, upstream):
    token, arn = enc.tenant("limited-e2e")
    status, body, _ = enc.admin("PATCH", "/admin/v1/tenants/limited-e2e", {"rate_limits": {"requests_per_minute": 1}})
    assert status == 200, body
    message, _ = sealed_request({"model": "mock-1", "messages": [{"role": "user", "content": "one"}]}, "limited-e2e", arn)
    assert post(enc, "/v1/chat/completions", token, message)[0] == 200
    enc.proxy.reset()
    before = upstream.count
    message, _ = sealed_request({"model": "mock-1", "messages": [{"role": "user", "content": "two"}]}, "limited-e2e", arn)
    status, body, headers = post(enc, "/v1/chat/completions", token, message)
    assert status == 429 and body["error"]["code"] == "rate_limited", body
    assert 1 <= int(headers["retry-after"]) <= 120
    assert "Decrypt" not in enc.proxy.calls and upstream.count == before, enc.proxy.calls
