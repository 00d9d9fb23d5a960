"""Schemathesis hooks for test_admin_api_schema.py (loaded through SCHEMATHESIS_HOOKS). The admin
API's document allows a key reference of any store; this run has two, a local store and moto's
KMS in us-east-1 (the other stores have their own tests). A generated reference is made one
those can answer, as a client of such a deployment would send: an ARN's region becomes
us-east-1 (moto refuses regions it does not know, as AWS has no endpoint for them), and a
reference of another store a local key of a name made from it."""
import re
import urllib.parse

import schemathesis


def peer_key(ref):
    if not isinstance(ref, str):
        return ref
    if ref.startswith("aws-kms:"):
        return re.sub(r"^(aws-kms:arn:aws[a-z-]*:kms:)[^:]+", r"\1us-east-1", ref)
    if ref.split(":", 1)[0] in ("pkcs11", "vault-transit", "kmip"):
        return "local:" + (re.sub(r"[^A-Za-z0-9._-]", "-", ref.split(":", 1)[1]).lstrip(".") or "k")[:128]
    return ref


@schemathesis.hook
def map_body(context, body):
    if isinstance(body, dict) and "key" in body:
        return {**body, "key": peer_key(body["key"])}
    return body


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    if path_parameters and isinstance(path_parameters.get("ref"), str):
        return {**path_parameters, "ref": peer_key(urllib.parse.unquote(path_parameters["ref"]))}
    return path_parameters
