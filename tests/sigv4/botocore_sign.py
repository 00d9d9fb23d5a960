"""Oracle for the SigV4 tests: signs each request of a JSON list (stdin) with botocore's SigV4Auth at
a fixed time and prints the resulting headers (stdout), so our signer can be compared byte for byte."""
import base64
import datetime
import json
import sys

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

out = []
for case in json.load(sys.stdin):
    fixed = datetime.datetime.fromtimestamp(case["epoch"], datetime.timezone.utc).replace(tzinfo=None)
    botocore.auth.get_current_datetime = lambda fixed=fixed: fixed
    request = AWSRequest(method=case["method"], url=case["url"], data=base64.b64decode(case["body"]))
    for name, value in case["headers"]:
        request.headers[name] = value  # an email.message.Message: repeated names are kept, as sent
    creds = Credentials(case["access_key"], case["secret_key"], case.get("token"))
    # S3 signs its path as sent and its payload's hash as given in X-Amz-Content-SHA256.
    auth = botocore.auth.S3SigV4Auth if case["service"] == "s3" else botocore.auth.SigV4Auth
    auth(creds, case["service"], case["region"]).add_auth(request)
    out.append({k: v for k, v in request.headers.items() if k in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")})
json.dump(out, sys.stdout)
