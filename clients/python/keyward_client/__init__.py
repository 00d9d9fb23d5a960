"""An httpx transport that encrypts requests to Keyward with the AWS Encryption SDK and decrypts its answers."""
import base64
import importlib
import json

import httpx
from aws_encryption_sdk import CommitmentPolicy, EncryptionSDKClient
from aws_encryption_sdk.identifiers import Algorithm

__all__ = ["KeywardEncryptingTransport", "KeywardDecryptionError"]

ENCODING = "aws-esdk"


class KeywardDecryptionError(Exception):
    """An answer that does not decrypt, names another tenant or purpose, or belongs to another request."""


def _httpx_of(obj):
    """The httpx package a request or client belongs to: `httpx`, or the `httpx2` fork that recent
    `anthropic` SDKs use (the same API, its own classes)."""
    return importlib.import_module(type(obj).__module__.split(".")[0])


class KeywardEncryptingTransport(httpx.BaseTransport):
    """Wraps another transport (default: the HTTP transport of the caller's httpx, `httpx` or
    `httpx2`): each request with a body is sent as one ESDK message under the tenant's key, and the
    answers are decrypted before the SDK reads them.

    Give exactly one of `key_provider` (a master-key provider), `materials_manager` (for example a
    `CachingCryptoMaterialsManager`) or `keyring` (ESDK 4)."""

    def __init__(self, *, tenant, key_provider=None, materials_manager=None, keyring=None, transport=None,
                 algorithm=Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY, esdk=None):
        given = {k: v for k, v in (("key_provider", key_provider), ("materials_manager", materials_manager),
                                   ("keyring", keyring)) if v is not None}
        if len(given) != 1:
            raise ValueError("give exactly one of key_provider, materials_manager, keyring")
        self._keys = given
        self._tenant = tenant
        self._algorithm = algorithm
        self._inner = transport
        self._defaults = {}
        self._esdk = esdk or EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)

    def _transport(self, hx):
        if self._inner is not None:
            return self._inner
        if hx.__name__ not in self._defaults:
            self._defaults[hx.__name__] = hx.HTTPTransport()
        return self._defaults[hx.__name__]

    def handle_request(self, request):
        hx = _httpx_of(request)
        body = request.read()
        request_id = None
        headers = hx.Headers(request.headers)
        headers["accept-encoding"] = ENCODING
        if body:
            ciphertext, header = self._esdk.encrypt(
                source=body, algorithm=self._algorithm,
                encryption_context={"keyward:tenant": self._tenant, "keyward:purpose": "request"}, **self._keys)
            request_id = header.message_id.hex()
            headers["content-encoding"] = ENCODING
            headers["content-length"] = str(len(ciphertext))
            body = ciphertext
        request = hx.Request(request.method, request.url, headers=headers, content=body, extensions=request.extensions)
        response = self._transport(hx).handle_request(request)
        if response.headers.get("content-encoding", "").lower() == ENCODING:
            try:
                sealed = response.read()
            finally:
                response.close()
            plaintext = self.open_answer(sealed, request_id)
            out = hx.Headers(response.headers)
            del out["content-encoding"]
            out.pop("content-length", None)
            return hx.Response(response.status_code, headers=out, content=plaintext, request=request,
                               extensions=response.extensions)
        if response.headers.get("keyward-event-encoding", "").lower() == ENCODING:
            return hx.Response(response.status_code, headers=response.headers, request=request,
                               stream=_events(hx)(response.stream, self, request_id), extensions=response.extensions)
        if request_id is not None and 200 <= response.status_code < 300:
            # An encrypted request is answered encrypted: a plaintext answer was not Keyward's.
            response.close()
            raise KeywardDecryptionError("an encrypted request got a plaintext answer")
        return response

    def open_answer(self, message, request_id, sequence=None):
        """The JSON of one answer message, after checking its context, its request binding and, for
        an event of a stream, its position (`keyward_seq`: no event dropped, repeated or moved)."""
        try:
            plaintext, header = self._esdk.decrypt(source=message, **self._keys)
        except Exception as e:  # noqa: BLE001 - the SDK raises several types; none may pass as an answer
            raise KeywardDecryptionError(f"the answer does not decrypt: {type(e).__name__}") from None
        context = header.encryption_context
        if context.get("keyward:tenant") != self._tenant or context.get("keyward:purpose") != "response":
            raise KeywardDecryptionError("the answer's encryption context is not this tenant's response context")
        if request_id is not None or sequence is not None:
            try:
                fields = json.loads(plaintext)
                bound, seq = fields.get("keyward_request"), fields.get("keyward_seq")
            except (ValueError, AttributeError):
                bound = seq = None
            if request_id is not None and bound != request_id:
                raise KeywardDecryptionError("the answer is not bound to this request")
            if sequence is not None and seq != sequence:
                raise KeywardDecryptionError("an event of the stream is missing, repeated or out of order")
        return plaintext

    def close(self):
        for t in [self._inner, *self._defaults.values()]:
            if t is not None:
                t.close()


_event_streams = {}


def _events(hx):
    """The decrypting stream class for `hx` (its responses accept only its own stream type)."""
    if hx.__name__ not in _event_streams:
        _event_streams[hx.__name__] = type("DecryptingEvents", (_DecryptingEvents, hx.SyncByteStream), {})
    return _event_streams[hx.__name__]


class _DecryptingEvents:
    """An event stream whose events' data are base64 ESDK messages, yielded with the JSON instead."""

    def __init__(self, inner, transport, request_id):
        self._inner = inner
        self._transport = transport
        self._request_id = request_id
        self._next = 0

    def __iter__(self):
        pending = b""
        for chunk in self._inner:
            pending += chunk.replace(b"\r\n", b"\n")
            while b"\n\n" in pending:
                event, pending = pending.split(b"\n\n", 1)
                yield self._open(event) + b"\n\n"
        if pending.strip():
            yield self._open(pending.strip(b"\n")) + b"\n\n"

    def _open(self, event):
        lines = []
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                value = line[5:].lstrip(b" ")
                if value != b"[DONE]":
                    try:
                        message = base64.b64decode(value, validate=True)
                    except ValueError:
                        raise KeywardDecryptionError("an event's data is not base64") from None
                    value = self._transport.open_answer(message, self._request_id, self._next)
                    self._next += 1
                lines.extend(b"data: " + part for part in value.split(b"\n"))
                continue
            lines.append(line)
        return b"\n".join(lines)

    def close(self):
        self._inner.close()
