"""schemathesis hooks for armor (tests/schema/run.sh).

ARMOR_SCHEMA_MODE=signed: every request that carries the run's credential
is signed with ARMOR-PSK (ARMOR_KEY_ID, ARMOR_SECRET_KEY) as it goes on the
wire, through a requests auth object, so the signature covers the final path
and body bytes. The credential is declared to schemathesis as an auth
provider, so its checks (`ignored_auth`, `missing_required_header`) probe
the same request without it and with a made-up one, and expect 401.

ARMOR_SCHEMA_MODE=password: the owner's FH-AUTH token (ARMOR_TOKEN), so
the routes that refuse API keys answer with their own bodies.

ARMOR_SCHEMA_MODE=anonymous: no credential; the check `unauthenticated_is_401`
requires 401 from every operation that is not public (or 400 for a target
refused before authentication).
"""
import base64
import hashlib
import hmac
import os
import secrets
import time

import requests
import schemathesis

MODE = os.environ.get("ARMOR_SCHEMA_MODE", "anonymous")


class ArmorPsk(requests.auth.AuthBase):
    def __init__(self, key_id: str, secret: str):
        self.key_id = key_id
        self.secret = secret.encode()

    def __call__(self, r):
        path = r.path_url.split("?", 1)[0]
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        nonce = secrets.token_hex(16)
        ts = str(int(time.time()))
        msg = self.key_id.encode() + r.method.encode() + path.encode() + nonce.encode() + ts.encode() + body
        sig = base64.b64encode(hmac.new(self.secret, msg, hashlib.sha512).digest()).decode()
        r.headers["Authorization"] = f"ARMOR-PSK {self.key_id}:{sig}:{nonce}:{ts}"
        return r


# Stands in for the signature until the request's final bytes are known.
PLACEHOLDER = "ARMOR-PSK to-be-signed"


if MODE in ("signed", "password"):

    @schemathesis.auth()
    class RunCredential:
        """Marks a case as carrying the run's credential, so schemathesis
        knows the credential is real (and probes without it)."""

        def get(self, case, ctx):
            if MODE == "password":
                return "FH-AUTH " + os.environ["ARMOR_TOKEN"]
            return PLACEHOLDER

        def set(self, case, data, ctx):
            case.headers = case.headers or {}
            case.headers["Authorization"] = data


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    placeholder = any(k.lower() == "authorization" and v == PLACEHOLDER for k, v in headers.items())
    if MODE == "signed":
        # The credential the auth provider set: signed on the wire. A
        # generated or removed Authorization is left as it is.
        if placeholder:
            kwargs["auth"] = ArmorPsk(os.environ["ARMOR_KEY_ID"], os.environ["ARMOR_SECRET_KEY"])
    elif MODE == "anonymous":
        case.headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}


@schemathesis.check
def unauthenticated_is_401(ctx, response, case):
    if MODE != "anonymous":
        return None
    # Probes with an undocumented method (TRACE) are 405 before anything.
    if case.method.upper() != case.operation.method.upper():
        return None
    policy = case.operation.definition.raw.get("x-armor-policy", "")
    if policy in ("public", "no-api-key"):
        return None
    status = response.status_code
    if status == 401:
        return None
    if status == 400:
        try:
            if response.json().get("error") == "malformed_request_target":
                return None
        except Exception:
            pass
    raise AssertionError(f"{case.method} {case.formatted_path}: {status} without credentials, expected 401")
