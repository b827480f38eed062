"""The ARMOR-PSK signature, with the standard library only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Optional, Union

SCHEME = "ARMOR-PSK"
MAX_FIELD_LEN = 128

Body = Union[bytes, bytearray, memoryview, str]


class ArmorPskError(ValueError):
    """A request cannot be signed: the message says which value and why.

    Raised before anything is sent. Messages never include the secret.
    """


def check_field(what: str, value: object) -> str:
    """Key ids and nonces: 1 to 128 visible ASCII characters, no ``:``."""
    if not isinstance(value, str):
        raise ArmorPskError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise ArmorPskError(f"{what} is empty")
    if len(value) > MAX_FIELD_LEN:
        raise ArmorPskError(
            f"{what} is {len(value)} characters long; at most {MAX_FIELD_LEN} are allowed"
        )
    for ch in value:
        if not "!" <= ch <= "~":
            raise ArmorPskError(
                f"{what} may hold only visible ASCII characters (0x21-0x7E), found {ch!r}"
            )
    if ":" in value:
        raise ArmorPskError(f"{what} may not contain ':' (it separates the header's fields)")
    return value


def _check_method(method: object) -> str:
    if not isinstance(method, str) or not method:
        raise ArmorPskError("method must be a non-empty str such as 'GET'")
    token = "!#$%&'*+-.^_`|~"
    if any(not (ch.isascii() and (ch.isalnum() or ch in token)) for ch in method):
        raise ArmorPskError(f"method {method!r} is not an HTTP method token")
    return method


def _check_path(path: object) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ArmorPskError("path must be a str starting with '/', as on the request line")
    for ch in path:
        if not "!" <= ch <= "~":
            raise ArmorPskError(
                f"path holds {ch!r}: give it percent-encoded, exactly as it is sent"
            )
    return path


def _body_bytes(body: object) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if body is None:
        return b""
    raise ArmorPskError(f"body must be bytes or str, not {type(body).__name__}")


def new_nonce() -> str:
    """A fresh random nonce: 128 bits as 32 lowercase hex digits."""
    return secrets.token_hex(16)


def sign(
    key_id: str,
    secret: str,
    method: str,
    path: str,
    body: Body = b"",
    *,
    nonce: Optional[str] = None,
    timestamp: Optional[int] = None,
    sign_query: bool = False,
) -> str:
    """The whole ``Authorization`` value for one request.

    ``path`` is the request target as sent (percent-encoded). Its query
    string is left out of the signature (the vendor form) unless
    ``sign_query`` is true. ``body`` is the exact bytes sent; a ``str`` is
    taken as UTF-8. ``nonce`` defaults to 32 random hex digits and
    ``timestamp`` to the current Unix time in seconds.
    """
    check_field("key id", key_id)
    if not isinstance(secret, str) or not secret:
        raise ArmorPskError("the secret key is empty")
    _check_method(method)
    _check_path(path)
    nonce = new_nonce() if nonce is None else check_field("nonce", nonce)
    if timestamp is None:
        timestamp = int(time.time())
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ArmorPskError("timestamp must be a non-negative int (Unix seconds)")
    signed_path = path if sign_query else path.split("?", 1)[0]
    ts = str(timestamp)
    message = b"".join(
        (
            key_id.encode("ascii"),
            method.encode("ascii"),
            signed_path.encode("ascii"),
            nonce.encode("ascii"),
            ts.encode("ascii"),
            _body_bytes(body),
        )
    )
    mac = hmac.new(secret.encode("utf-8"), message, hashlib.sha512).digest()
    signature = base64.b64encode(mac).decode("ascii")
    return f"{SCHEME} {key_id}:{signature}:{nonce}:{ts}"
