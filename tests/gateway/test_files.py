"""Files (issue 20): OpenAI's Files API through the official openai SDK against `keyward serve`. A
file is encrypted as it streams in, kept as one ESDK message in the blob folder, and decrypted as
it streams out; a KMS-keyed tenant's blob is opened by aws-encryption-cli (moto's KMS) without
Keyward."""
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid

import openai
import pytest

from conftest import Gateway, keyward_bin

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop"))
from kms_peers import Moto  # noqa: E402


def blobs(g):
    """Every file under the gateway's blob folder, relative to it."""
    root = os.path.join(g.data, "blobs")
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def multipart(parts, boundary="kwtestboundary"):
    """A multipart/form-data body from (name, filename or None, bytes) parts, in the given order."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def upload_begun(g, token, head, data, tail):
    """An upload (boundary `bb`) sent up to its first MiB of `data`, once the gateway is sealing it
    into a blob: the connection, to send `data[1 << 20:] + tail` on and read the answer from."""
    host, port = urllib.parse.urlsplit(g.url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.putrequest("POST", "/v1/files")
    conn.putheader("authorization", f"Bearer {token}")
    conn.putheader("content-type", "multipart/form-data; boundary=bb")
    conn.putheader("content-length", str(len(head) + len(data) + len(tail)))
    conn.endheaders()
    conn.send(head + data[:1 << 20])
    deadline = time.time() + 10
    while not [b for b in blobs(g) if ".partial-" in b] and time.time() < deadline:
        time.sleep(0.05)
    return conn


def upload_raw(g, token, body, content_type):
    return g.request("POST", "/v1/files", token=token, raw=body, headers={"content-type": content_type})


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1])


def test_upload_list_retrieve_download_and_delete_with_the_openai_sdk(gateway):
    token = gateway.new_tenant("files-basic")
    c = gateway.openai(token)
    data = b'{"custom_id": "1", "body": {}}\n' * 1000 + os.urandom(100_000)
    f = c.files.create(file=("data.jsonl", data), purpose="batch")
    assert (f.object, f.bytes, f.filename, f.purpose, f.status) == ("file", len(data), "data.jsonl", "batch", "processed")
    g = c.files.create(file=("notes.txt", b"short"), purpose="user_data", expires_after={"anchor": "created_at", "seconds": 3600})
    assert g.expires_at == g.created_at + 3600
    assert {x.id for x in c.files.list()} == {f.id, g.id}
    assert [x.id for x in c.files.list(purpose="batch")] == [f.id]
    first = c.files.list(limit=1)
    assert first.has_more and [x.id for x in first.data] == [g.id]  # newest first
    assert [x.id for x in c.files.list(limit=1, after=g.id).data] == [f.id]
    assert [x.id for x in c.files.list(limit=1)] == [g.id, f.id]  # the SDK follows the pages
    assert c.files.retrieve(f.id) == f
    assert c.files.content(f.id).read() == data
    assert c.files.content(g.id).read() == b"short"
    # The blob is an ESDK message (version 2), never the plaintext.
    blob = open(os.path.join(gateway.data, "blobs", "files", "files-basic", f.id), "rb").read()
    assert blob[0] == 2 and data[:64] not in blob
    assert c.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        c.files.content(f.id)
    assert f"files/files-basic/{f.id}" not in blobs(gateway)


def test_the_files_list_pages_as_openais_and_skips_expired_files_without_a_short_page(gateway):
    """OpenAI's Files list takes a limit of 1 to 10,000 (default 10,000, so that an SDK's
    `files.list().data` is every file); a file past its expiry (not yet purged) is skipped, and the
    page is filled from the files after it."""
    import sqlite3
    token = gateway.new_tenant("files-paging")
    c = gateway.openai(token)
    ids = [c.files.create(file=(f"f{i}.txt", b"x"), purpose="user_data").id for i in range(25)]
    assert [x.id for x in c.files.list().data] == ids[::-1]
    assert len(c.files.list(limit=10_000).data) == 25
    for limit in ["0", "10001", "x"]:
        status, body, _ = gateway.request("GET", f"/v1/files?limit={limit}", token=token)
        assert status == 400 and body["error"]["code"] == "invalid_field", body
    # The five newest expire: the first page of three is the next three, and more follow.
    with sqlite3.connect(f"{gateway.data}/keyward.sqlite3", timeout=10) as db:
        db.executemany("UPDATE records SET expires_at = 1 WHERE tenant = 'files-paging' AND id = ?", [(i,) for i in ids[-5:]])
    page = c.files.list(limit=3)
    assert [x.id for x in page.data] == ids[-6:-9:-1] and page.has_more
    assert [x.id for x in c.files.list(limit=3, order="asc", after=ids[-8])] == ids[-7:-5]
    assert not c.files.list(limit=3, order="asc", after=ids[-7]).has_more
    assert [x.id for x in c.files.list(limit=2)] == ids[-6::-1]
    # A page longer than one query of the store (1,000 records) is read in parts.
    more = [c.files.create(file=(f"g{i}.txt", b"y"), purpose="batch").id for i in range(1001)]
    assert [x.id for x in c.files.list(purpose="batch").data] == more[::-1]
    page = c.files.list(limit=1000, purpose="batch", order="asc")
    assert [x.id for x in page.data] == more[:1000] and page.has_more


def test_a_256_mib_file_streams_both_ways_in_bounded_memory(gateway, tmp_path):
    token = gateway.new_tenant("files-big")
    c = gateway.openai(token)
    path = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for _ in range(256):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            out.write(chunk)
    c.files.create(file=("warm.bin", b"x"), purpose="batch")  # the upload path's first use
    before = peak_rss_kib(gateway.proc.pid)
    with open(path, "rb") as fh:
        f = c.files.create(file=("big.bin", fh), purpose="fine-tune")
    assert f.bytes == 256 << 20
    got = hashlib.sha256()
    with c.files.with_streaming_response.content(f.id) as r:
        for part in r.iter_bytes(1 << 20):
            got.update(part)
    assert got.hexdigest() == digest.hexdigest()
    rise = peak_rss_kib(gateway.proc.pid) - before
    print(f"peak RSS rise over a 256 MiB upload and download: {rise / 1024:.1f} MiB")
    assert rise <= 64 * 1024, f"peak RSS rose by {rise} KiB"


def test_an_oversized_upload_is_refused_and_nothing_is_kept(fresh_gateway):
    g = fresh_gateway(config_extra={"files": {"max_bytes": 1 << 20}})
    token = g.new_tenant("files-limit")
    for size in ((1 << 20) + 1, 40 << 20):
        body, ctype = multipart([("purpose", None, b"batch"), ("file", "big.bin", os.urandom(size))])
        began = time.monotonic()
        # urllib sends the whole body before it reads: the answer reaches it (the rest is drained).
        status, answer, _ = upload_raw(g, token, body, ctype)
        assert status == 413 and answer["error"]["code"] == "request_too_large", answer
        assert time.monotonic() - began < 10
        assert blobs(g) == []
    exactly, ctype = multipart([("purpose", None, b"batch"), ("file", "max.bin", os.urandom(1 << 20))])
    status, answer, _ = upload_raw(g, token, exactly, ctype)
    assert status == 200 and answer["bytes"] == 1 << 20, answer
    assert g.openai(token).files.list().data[0].id == answer["id"]
    # Too large by its length: refused before the body is read, so with no `100 Continue`, and its
    # client need not send 40 MiB to learn it.
    u = urllib.parse.urlparse(g.url)
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(f"POST /v1/files HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: {ctype}\r\n"
                  f"content-length: {40 << 20}\r\nexpect: 100-continue\r\n\r\n".encode())
        refused, _ = read_head(s)
        assert refused.startswith("HTTP/1.1 413"), refused


def test_malformed_uploads_get_a_clear_error_and_leave_nothing(gateway):
    token = gateway.new_tenant("files-bad")
    f = ("file", "a.txt", b"hello")
    cases = [
        (multipart([f]), "missing_field"),  # no purpose, before or after the file
        (multipart([("purpose", None, b"nope"), f]), "invalid_field"),
        (multipart([f, ("purpose", None, b"nope")]), "invalid_field"),  # checked once read, after the file
        (multipart([("purpose", None, b"pending"), f]), "invalid_field"),  # the placeholder is not a purpose
        (multipart([("purpose", None, b"batch")]), "missing_field"),
        (multipart([("purpose", None, b"batch"), f, ("expires_after[anchor]", None, b"created_at"),
                    ("expires_after[seconds]", None, b"10")]), "invalid_field"),
        (multipart([("purpose", None, b"batch"), f, f]), "invalid_multipart"),
        ((b"--kwtestboundary\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n",
          "multipart/form-data; boundary=kwtestboundary"), "invalid_multipart"),  # no closing delimiter
        ((b"{}", "application/json"), "invalid_multipart"),
    ]
    for (body, ctype), code in cases:
        status, answer, _ = upload_raw(gateway, token, body, ctype)
        assert status == 400 and answer["error"]["code"] == code, (code, answer)
    assert gateway.openai(token).files.list().data == []
    assert not [b for b in blobs(gateway) if b.startswith("files/files-bad/")]


def test_a_purpose_sent_after_the_file_as_the_node_sdk_sends_it(gateway):
    """OpenAI's Node SDK writes the form's fields in the order of its argument, `{file, purpose}`:
    the file part first. Such an upload is sealed under a placeholder purpose and its blob
    re-headed once the purpose is read (a second key-store call, audited as `rewrap`)."""
    token = gateway.new_tenant("files-late")
    c = gateway.openai(token)
    data = os.urandom(3 << 20) + b"tail"
    body, ctype = multipart([("file", "late.jsonl", data), ("purpose", None, b"fine-tune"),
                             ("expires_after[anchor]", None, b"created_at"), ("expires_after[seconds]", None, b"7200")])
    status, answer, _ = upload_raw(gateway, token, body, ctype)
    assert status == 200, answer
    assert (answer["purpose"], answer["bytes"], answer["filename"]) == ("fine-tune", len(data), "late.jsonl")
    assert answer["expires_at"] - answer["created_at"] == 7200
    assert c.files.retrieve(answer["id"]).purpose == "fine-tune"
    assert [x.id for x in c.files.list(purpose="fine-tune")] == [answer["id"]]
    assert c.files.content(answer["id"]).read() == data
    events = gateway.as_role("auditor", "GET", "/admin/v1/audit?tenant=files-late&limit=100")[1]["data"]
    rewraps = [e for e in events if e["operation"] == "rewrap"]
    assert [(e["record"], e["detail"]) for e in rewraps] == [(f"{answer['id']}/file.content", "purpose=fine-tune")], rewraps
    assert [b for b in blobs(gateway) if b.startswith("files/files-late/")] == [f"files/files-late/{answer['id']}"]


def test_a_chunked_upload_without_a_length(gateway, tmp_path):
    token = gateway.new_tenant("files-chunked")
    src = tmp_path / "c.bin"
    src.write_bytes(os.urandom(3_000_000))
    r = subprocess.run(["curl", "-sS", "-X", "POST", gateway.url + "/v1/files", "-H", f"authorization: Bearer {token}",
                        "-H", "transfer-encoding: chunked", "-F", "purpose=assistants", "-F", f"file=@{src}"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    fid = json.loads(r.stdout)["id"]
    assert gateway.openai(token).files.content(fid).read() == src.read_bytes()


def test_another_tenants_file_is_not_found(gateway):
    a, b = gateway.new_tenant("files-a"), gateway.new_tenant("files-b")
    f = gateway.openai(a).files.create(file=("a.txt", b"mine"), purpose="batch")
    cb = gateway.openai(b)
    for call in (lambda: cb.files.retrieve(f.id), lambda: cb.files.content(f.id), lambda: cb.files.delete(f.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert cb.files.list().data == []
    assert gateway.openai(a).files.content(f.id).read() == b"mine"


def test_a_revoked_key_refuses_upload_and_download(gateway):
    token = gateway.new_tenant("files-revoked")
    c = gateway.openai(token)
    f = c.files.create(file=("r.txt", b"before"), purpose="batch")
    ref = urllib.parse.quote("local:files-revoked", safe="")
    status, body, _ = gateway.as_role("key-admin", "POST", f"/admin/v1/keys/{ref}/disable")
    assert status == 200, body
    for call in (lambda: c.files.create(file=("r2.txt", b"after"), purpose="batch"), lambda: c.files.content(f.id)):
        with pytest.raises(openai.PermissionDeniedError) as e:
            call()
        assert e.value.body["code"] == "key_revoked"
    status, body, _ = gateway.as_role("key-admin", "POST", f"/admin/v1/keys/{ref}/enable")
    assert status == 200, body
    assert c.files.content(f.id).read() == b"before"
    assert [x.filename for x in c.files.list()] == ["r.txt"]


def test_no_marker_in_the_data_folder_or_logs(fresh_gateway):
    g = fresh_gateway()
    token = g.new_tenant("files-canary")
    marker = "CANARY-" + uuid.uuid4().hex
    c = g.openai(token)
    f = c.files.create(file=(f"{marker}.jsonl", (marker + "\n").encode() * 5000), purpose="batch")
    assert c.files.retrieve(f.id).filename == f"{marker}.jsonl"
    assert marker.encode() in c.files.content(f.id).read()
    g.stop()
    found = [os.path.join(d, n) for d, _, fs in os.walk(g.workdir) for n in fs
             if marker.encode() in open(os.path.join(d, n), "rb").read()]
    assert found == []


def test_a_crash_mid_upload_leaves_nothing_served_and_orphans_are_swept(fresh_gateway):
    g = fresh_gateway(config_extra={"purge_interval_seconds": 0.3})
    token = g.new_tenant("files-crash")
    c = g.openai(token)
    kept = c.files.create(file=("kept.txt", b"kept"), purpose="batch")
    # An upload cut by SIGKILL halfway through its file part.
    host, port = urllib.parse.urlsplit(g.url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    head = b'--bb\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n' \
           b'--bb\r\nContent-Disposition: form-data; name="file"; filename="cut.bin"\r\n\r\n'
    conn.putrequest("POST", "/v1/files")
    conn.putheader("authorization", f"Bearer {token}")
    conn.putheader("content-type", "multipart/form-data; boundary=bb")
    conn.putheader("content-length", str(len(head) + (4 << 20)))
    conn.endheaders()
    conn.send(head + os.urandom(1 << 20))
    deadline = time.time() + 10
    while not [b for b in blobs(g) if ".partial-" in b] and time.time() < deadline:
        time.sleep(0.05)
    g.stop(sig=signal.SIGKILL)
    conn.close()
    partial = [b for b in blobs(g) if ".partial-" in b]
    assert len(partial) == 1, blobs(g)
    # A committed blob whose record never came (a crash between the two).
    root = os.path.join(g.data, "blobs")
    orphan = f"files/files-crash/file-{uuid.uuid4().hex}"
    shutil.copy(os.path.join(root, "files", "files-crash", kept.id), os.path.join(root, orphan))
    g.start()
    c = g.openai(token)  # listening on a new port
    assert [x.id for x in c.files.list()] == [kept.id]  # nothing of the cut upload is served
    time.sleep(1)
    assert orphan in blobs(g) and partial[0] in blobs(g)  # too recent to judge
    hour_old = time.time() - 3600
    os.utime(os.path.join(root, partial[0]), (hour_old, hour_old))
    time.sleep(1)
    assert partial[0] in blobs(g)  # an hour without a write: a slow upload, not yet abandoned
    # Orphans are judged after ten minutes; an upload is abandoned after a day without a write.
    old, older = time.time() - 3600, time.time() - 2 * 86400
    for rel, t in ((orphan, old), (partial[0], older), (f"files/files-crash/{kept.id}", older)):
        os.utime(os.path.join(root, rel), (t, t))
    deadline = time.time() + 10
    while blobs(g) != [f"files/files-crash/{kept.id}"] and time.time() < deadline:
        time.sleep(0.1)
    assert blobs(g) == [f"files/files-crash/{kept.id}"]
    assert c.files.content(kept.id).read() == b"kept"


@pytest.mark.parametrize("purpose_last", [False, True], ids=["purpose-first", "purpose-last"])
def test_an_upload_streaming_through_a_whole_rekey_is_moved_before_its_record_is_written(fresh_gateway, purpose_last):
    """The re-key's blob passes go by records; an upload still streaming has none yet, so it moves
    its own blob when it finds the tenant on another key. The old key is then disabled: the file
    still reads. With the purpose after the file (the Node SDK's order), the late purpose's rewrap
    goes straight to the new key, and that is the only move."""
    g = fresh_gateway()
    token = g.new_tenant("files-moving")
    create_key(g, "files-moving-2")
    data = os.urandom(3 << 20)
    purpose = b'--bb\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
    head = b'--bb\r\nContent-Disposition: form-data; name="file"; filename="moving.bin"\r\n\r\n'
    tail = b"\r\n" + purpose + b"--bb--\r\n" if purpose_last else b"\r\n--bb--\r\n"
    head = head if purpose_last else purpose + head
    conn = upload_begun(g, token, head, data, tail)
    status, body, _ = g.as_role("key-admin", "POST", "/admin/v1/tenants/files-moving/rekey", {"key": "local:files-moving-2"})
    assert status == 202, body
    assert g.wait_job(body["job"])["status"] == "done"
    conn.send(data[1 << 20:] + tail)
    r = conn.getresponse()
    answer = r.read()
    assert r.status == 200, answer
    fid = json.loads(answer)["id"]
    status, _, _ = g.as_role("key-admin", "POST", f"/admin/v1/keys/{urllib.parse.quote('local:files-moving', safe='')}/disable")
    assert status == 200
    assert g.openai(token).files.content(fid).read() == data
    assert g.openai(token).files.retrieve(fid).purpose == "batch"
    assert [b for b in blobs(g) if b.startswith("files/files-moving/")] == [f"files/files-moving/{fid}"]
    events = g.as_role("auditor", "GET", "/admin/v1/audit?tenant=files-moving&operation=rewrap&limit=100")[1]["data"]
    expected = ("local:files-moving", "purpose=batch to=local:files-moving-2") if purpose_last else ("local:files-moving", "to=local:files-moving-2")
    assert [(e["key"], e["detail"]) for e in events if e["record"] == f"{fid}/file.content"] == [expected], events


def test_a_key_disabled_before_a_late_purpose_refuses_the_upload_and_keeps_nothing(fresh_gateway):
    """The late purpose's rewrap is a key operation like any other: with the tenant's key disabled
    while the file streamed in, it is refused (key_revoked), and nothing of the upload stays: no
    file, no blob, no partial. The refusal is in the audit log."""
    g = fresh_gateway()
    token = g.new_tenant("files-cut")
    data = os.urandom(2 << 20)
    head = b'--bb\r\nContent-Disposition: form-data; name="file"; filename="cut.bin"\r\n\r\n'
    tail = b'\r\n--bb\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--bb--\r\n'
    conn = upload_begun(g, token, head, data, tail)
    ref = urllib.parse.quote("local:files-cut", safe="")
    status, body, _ = g.as_role("key-admin", "POST", f"/admin/v1/keys/{ref}/disable")
    assert status == 200, body
    conn.send(data[1 << 20:] + tail)
    r = conn.getresponse()
    answer = json.loads(r.read())
    assert (r.status, answer["error"]["code"]) == (403, "key_revoked"), answer
    status, body, _ = g.as_role("key-admin", "POST", f"/admin/v1/keys/{ref}/enable")
    assert status == 200, body
    assert list(g.openai(token).files.list()) == []
    assert [b for b in blobs(g) if b.startswith("files/files-cut/")] == []
    events = g.as_role("auditor", "GET", "/admin/v1/audit?tenant=files-cut&limit=100")[1]["data"]
    assert not [e for e in events if e["operation"] == "rewrap" and e["result"] == "ok"], events


def create_key(g, name):
    r = subprocess.run([keyward_bin(), "keys", "create", f"local:{name}", "--keystore", f"{g.data}/keys"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def cli_decrypt(blob, out, arn, tenant, fid, purpose, env):
    return subprocess.run(["aws-encryption-cli", "--decrypt", "--input", blob, "--output", str(out), "-S",
                           "--wrapping-keys", f"key={arn}", "--encryption-context", f"keyward:file={fid}",
                           f"keyward:tenant={tenant}", f"keyward:purpose={purpose}"],
                          capture_output=True, timeout=120, env={**os.environ, **env})


def test_a_rekey_moves_blobs_to_kms_where_aws_encryption_cli_opens_them_without_keyward(upstream, tmp_path):
    """Files uploaded under a local key, the tenant moved to a KMS key (header-only rewrite of each
    blob), a file uploaded under KMS: the old key disabled, every file still downloads, and
    aws-encryption-cli with a KMS keyring opens every blob in the folder into the original bytes."""
    moto = Moto()
    try:
        import boto3
        kms = boto3.client("kms", region_name="us-east-1", endpoint_url=moto.url, aws_access_key_id="testing",
                           aws_secret_access_key="testing")
        arn = kms.create_key(Description="keyward files exit door")["KeyMetadata"]["Arn"]
        aws = {"AWS_ENDPOINT_URL_KMS": moto.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
        g = Gateway(upstream, str(tmp_path / "gw"), extra_env=aws)
        try:
            token = g.new_tenant("files-kms")
            c = g.openai(token)
            before = {c.files.create(file=(f"l{i}.bin", data), purpose="batch").id: data
                      for i, data in enumerate([os.urandom(200_000), os.urandom(65536), b""])}
            status, body, _ = g.as_role("key-admin", "POST", "/admin/v1/tenants/files-kms/rekey", {"key": f"aws-kms:{arn}"})
            assert status == 202, body
            job = g.wait_job(body["job"])
            assert job["status"] == "done", job
            data = os.urandom(100_000)
            after = c.files.create(file=("k.bin", data), purpose="user_data")
            status, _, _ = g.as_role("key-admin", "POST", f"/admin/v1/keys/{urllib.parse.quote('local:files-kms', safe='')}/disable")
            assert status == 200
            expected = {**{fid: (d, "batch") for fid, d in before.items()}, after.id: (data, "user_data")}
            for fid, (d, purpose) in expected.items():
                assert c.files.content(fid).read() == d
                out = tmp_path / f"{fid}.out"
                r = cli_decrypt(os.path.join(g.data, "blobs", "files", "files-kms", fid), out, arn, "files-kms", fid, purpose, aws)
                assert r.returncode == 0, r.stderr
                assert out.read_bytes() == d
            # The context binds the blob to its file: another file's id is refused (the CLI exits 0
            # but says so, and writes nothing).
            r = cli_decrypt(os.path.join(g.data, "blobs", "files", "files-kms", after.id), tmp_path / "x", arn, "files-kms",
                            next(iter(before)), "user_data", aws)
            assert b"Operation failed" in r.stderr and not (tmp_path / "x").exists()
        finally:
            g.stop()
    finally:
        moto.stop()


def test_the_s3_blob_store_on_moto_and_the_exit_door_in_the_bucket(upstream, tmp_path):
    """Blobs in an S3 bucket (moto's S3; multipart for a file of several parts), the tenant's key
    in moto's KMS: the object in the bucket is opened by aws-encryption-cli without Keyward."""
    import boto3
    moto = Moto()
    try:
        aws = {"AWS_ENDPOINT_URL_KMS": moto.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
        s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto.url, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        s3.create_bucket(Bucket="keyward-files")
        kms = boto3.client("kms", region_name="us-east-1", endpoint_url=moto.url, aws_access_key_id="testing",
                           aws_secret_access_key="testing")
        arn = kms.create_key(Description="keyward s3 files")["KeyMetadata"]["Arn"]
        g = Gateway(upstream, str(tmp_path / "gw"), extra_env=aws, config_extra={"blobs": {
            "type": "s3", "bucket": "keyward-files", "prefix": "keyward/", "region": "us-east-1", "endpoint": moto.url}})
        try:
            token = g.new_tenant("files-s3", key=f"aws-kms:{arn}")
            c = g.openai(token)
            marker = ("CANARY-" + uuid.uuid4().hex).encode()
            small, big = marker * 10, marker + os.urandom(20 << 20) + marker
            fs = c.files.create(file=("small.txt", small), purpose="user_data")
            fb = c.files.create(file=("big.bin", big), purpose="batch")
            # The file part before the purpose (the Node SDK's order): the blob is re-headed in the bucket.
            late_data = marker + os.urandom(12 << 20)
            body, ctype = multipart([("file", "late.bin", late_data), ("purpose", None, b"fine-tune")])
            status, answer, _ = upload_raw(g, token, body, ctype)
            assert status == 200 and answer["purpose"] == "fine-tune", answer
            late = c.files.retrieve(answer["id"])
            keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="keyward-files")["Contents"])
            assert keys == sorted(f"keyward/files/files-s3/{f.id}" for f in (fs, fb, late))
            assert c.files.content(fs.id).read() == small and c.files.content(fb.id).read() == big
            assert c.files.content(late.id).read() == late_data
            assert not os.path.exists(os.path.join(g.data, "blobs", "files"))  # nothing in the folder store
            for f, data, purpose in ((fs, small, "user_data"), (fb, big, "batch"), (late, late_data, "fine-tune")):
                obj = s3.get_object(Bucket="keyward-files", Key=f"keyward/files/files-s3/{f.id}")["Body"].read()
                assert marker not in obj
                sealed, out = tmp_path / f"{f.id}.enc", tmp_path / f"{f.id}.out"
                sealed.write_bytes(obj)
                r = cli_decrypt(str(sealed), out, arn, "files-s3", f.id, purpose, aws)
                assert r.returncode == 0, r.stderr
                assert out.read_bytes() == data
            # The placeholder purpose is gone from the blob's context: the CLI, asked for it, opens nothing.
            obj = s3.get_object(Bucket="keyward-files", Key=f"keyward/files/files-s3/{late.id}")["Body"].read()
            (tmp_path / "late.enc").write_bytes(obj)
            r = cli_decrypt(str(tmp_path / "late.enc"), tmp_path / "late.pending", arn, "files-s3", late.id, "pending", aws)
            assert b"Operation failed" in r.stderr and not (tmp_path / "late.pending").exists()
            assert c.files.delete(fb.id).deleted and c.files.delete(late.id).deleted
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket="keyward-files")["Contents"]]
            assert keys == [f"keyward/files/files-s3/{fs.id}"]
            assert s3.list_multipart_uploads(Bucket="keyward-files").get("Uploads", []) == []
        finally:
            g.stop()
    finally:
        moto.stop()


def read_head(s, buf=b""):
    """One response head (status line and headers) from a raw socket (after `buf`, already read), and what followed it."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"connection closed after {buf!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def test_expect_100_continue_is_answered_when_the_upload_is_read_and_not_for_a_refused_one(gateway):
    # curl sends `Expect: 100-continue` with any body over 1 MiB and waits a second for the answer
    # before sending the body; without one, every such upload stood still for that second.
    token = gateway.new_tenant("files-expect")
    u = urllib.parse.urlparse(gateway.url)
    data = os.urandom(200_000)
    body, content_type = multipart([("purpose", None, b"batch"), ("file", "e.bin", data)])

    def head(bearer):
        return (f"POST /v1/files HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {bearer}\r\ncontent-type: {content_type}\r\n"
                f"content-length: {len(body)}\r\nexpect: 100-continue\r\n\r\n").encode()

    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(head(token))
        interim, rest = read_head(s)  # within the timeout, before any byte of the body is sent
        assert interim.startswith("HTTP/1.1 100 Continue"), interim
        s.sendall(body)
        final, rest = read_head(s, rest)
        assert final.startswith("HTTP/1.1 200"), final
        length = int(next(line.split(":")[1] for line in final.split("\r\n") if line.lower().startswith("content-length")))
        while len(rest) < length:
            rest += s.recv(65536)
        fid = json.loads(rest)["id"]
        # The connection stays usable: a second request on it.
        s.sendall(f"GET /v1/files/{fid} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n".encode())
        again, _ = read_head(s)
        assert again.startswith("HTTP/1.1 200"), again
    assert gateway.openai(token).files.content(fid).read() == data

    # Refused before the body is read: the final answer comes at once, and no 100.
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(head("kw-not-a-token"))
        refused, _ = read_head(s)
        assert refused.startswith("HTTP/1.1 401"), refused


def test_curl_uploads_without_waiting_for_a_continue_that_never_comes(gateway, tmp_path):
    token = gateway.new_tenant("files-curl-expect")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 << 20))
    r = subprocess.run(["curl", "-sS", "-v", "-X", "POST", gateway.url + "/v1/files", "-H", f"authorization: Bearer {token}",
                        "-F", "purpose=batch", "-F", f"file=@{src}"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert b"Expect: 100-continue" in r.stderr and b"HTTP/1.1 100 Continue" in r.stderr, r.stderr[-2000:]
    assert b"Done waiting for 100-continue" not in r.stderr
