"""``ArmorPskAuth``: the ``auth=`` of ``requests`` and ``httpx``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generator, Optional

from ._credentials import load_credentials
from ._sign import ArmorPskError, check_field, sign

if TYPE_CHECKING:
    import httpx
    import requests

try:
    from httpx import Auth as _HttpxAuth
except ImportError:  # httpx is optional: the class still works with requests.

    class _HttpxAuth:  # type: ignore[no-redef]
        requires_request_body = False


class ArmorPskAuth(_HttpxAuth):
    """Signs each request with ARMOR-PSK.

    Works as ``auth=`` for ``requests`` (sessions and one-off calls) and for
    ``httpx`` clients, sync and async. The signature covers the method, the
    path exactly as sent (its query too when ``sign_query`` is true) and the
    body bytes exactly as sent.

    Without ``key_id``/``secret``, they are read as the ``armor`` command line
    reads them: ``ARMOR_KEY_ID`` and ``ARMOR_SECRET_KEY``, then ``profile``
    (else ``ARMOR_PROFILE``, else ``default``) of the credentials file.
    The secret never appears in ``repr`` or in error messages.
    """

    requires_request_body = True

    def __init__(
        self,
        key_id: Optional[str] = None,
        secret: Optional[str] = None,
        *,
        profile: Optional[str] = None,
        sign_query: bool = False,
    ) -> None:
        if not key_id or not secret:
            found_id, found_secret = load_credentials(profile)
            key_id = key_id or found_id
            secret = secret or found_secret
        self.key_id: str = check_field("key id", key_id)
        self.__secret = secret
        self.sign_query = sign_query

    def __repr__(self) -> str:
        return (
            f"ArmorPskAuth(key_id={self.key_id!r}, secret=<redacted>, "
            f"sign_query={self.sign_query!r})"
        )

    def authorization(self, method: str, path: str, body: bytes = b"") -> str:
        """The ``Authorization`` value for one request, fresh nonce, now."""
        return sign(
            self.key_id, self.__secret, method, path, body, sign_query=self.sign_query
        )

    # requests -----------------------------------------------------------------
    def __call__(self, r: "requests.PreparedRequest") -> "requests.PreparedRequest":
        body = _requests_body(r)
        r.headers["Authorization"] = self.authorization(r.method or "GET", r.path_url, body)
        return r

    # httpx --------------------------------------------------------------------
    def auth_flow(
        self, request: "httpx.Request"
    ) -> Generator["httpx.Request", "httpx.Response", None]:
        path = request.url.raw_path.decode("ascii")
        request.headers["Authorization"] = self.authorization(
            request.method, path, request.content
        )
        yield request


def _requests_body(r: Any) -> bytes:
    """The bytes requests will send, made so when they were not yet bytes."""
    body = r.body
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        # http.client would send a str as Latin-1; send (and sign) UTF-8.
        data = body.encode("utf-8")
    elif hasattr(body, "read"):
        data = body.read()
        if isinstance(data, str):
            data = data.encode("utf-8")
    else:
        raise ArmorPskError(
            "a streamed body (generator or iterator) cannot be signed: "
            "pass the body as bytes or str"
        )
    r.body = data
    r.headers.pop("Transfer-Encoding", None)
    r.headers["Content-Length"] = str(len(data))
    return bytes(data)
