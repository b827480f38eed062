"""Against a real `armor serve` (started by clients/live-env.sh)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.error
import urllib.request
from typing import Any, Dict, Tuple

import httpx
import pytest
import requests

from armor_psk import ArmorPskAuth, ArmorPskError

BODY = {"note": "Zoë Ångström – 東京", "n": 1}


def _raw_get(url: str, authorization: str) -> Tuple[int, Dict[str, Any]]:
    """Sends a header as-is, without any signing."""
    req = urllib.request.Request(url, headers={"Authorization": authorization})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def _utf8_json() -> bytes:
    return json.dumps(BODY, ensure_ascii=False).encode("utf-8")


def test_requests_get_me_with_a_key(live: Dict[str, str]) -> None:
    auth = ArmorPskAuth(live["key_id"], live["secret"])
    r = requests.get(f"{live['url']}/me", auth=auth, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["accounts"][0]["id"] >= 1


def test_requests_post_utf8_json_body(live: Dict[str, str]) -> None:
    auth = ArmorPskAuth(live["key_id"], live["secret"])
    body = _utf8_json()
    r = requests.post(f"{live['url']}/auth/whoami", data=body.decode("utf-8"), auth=auth,
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200, r.text
    who = r.json()
    assert who["credential"] == "ARMOR-PSK"
    assert who["keyId"] == live["key_id"]
    assert who["bodyLength"] == len(body)
    assert who["bodySha256"] == hashlib.sha256(body).hexdigest()
    r = requests.post(f"{live['url']}/auth/whoami", json=BODY, auth=auth, timeout=10)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("sign_query", [False, True])
def test_requests_path_with_a_query(live: Dict[str, str], sign_query: bool) -> None:
    auth = ArmorPskAuth(live["key_id"], live["secret"], sign_query=sign_query)
    r = requests.get(f"{live['url']}/auth/whoami", params={"$top": "10", "q": "é x"},
                     auth=auth, timeout=10)
    assert r.status_code == 200, r.text
    assert "?" in r.request.path_url


def test_requests_replayed_header_is_refused_as_nonce_reused(live: Dict[str, str]) -> None:
    auth = ArmorPskAuth(live["key_id"], live["secret"])
    r = requests.get(f"{live['url']}/me", auth=auth, timeout=10)
    assert r.status_code == 200, r.text
    status, body = _raw_get(f"{live['url']}/me", r.request.headers["Authorization"])
    assert (status, body["error"]) == (401, "nonce_reused")


def test_wrong_secret_is_refused_as_invalid_signature(live: Dict[str, str]) -> None:
    auth = ArmorPskAuth(live["key_id"], live["secret"] + "x")
    r = requests.get(f"{live['url']}/me", auth=auth, timeout=10)
    assert (r.status_code, r.json()["error"]) == (401, "invalid_signature")


def test_requests_streamed_body_is_refused_before_sending(live: Dict[str, str]) -> None:
    auth = ArmorPskAuth(live["key_id"], live["secret"])
    with pytest.raises(ArmorPskError, match="streamed body"):
        requests.post(f"{live['url']}/auth/whoami", data=iter([b"a", b"b"]), auth=auth, timeout=10)


def test_credentials_from_the_environment(live: Dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARMOR_KEY_ID", live["key_id"])
    monkeypatch.setenv("ARMOR_SECRET_KEY", live["secret"])
    with requests.Session() as s:
        s.auth = ArmorPskAuth()
        for _ in range(3):
            r = s.get(f"{live['url']}/accounts", timeout=10)
            assert r.status_code == 200, r.text


def test_httpx_sync(live: Dict[str, str]) -> None:
    auth = ArmorPskAuth(live["key_id"], live["secret"])
    with httpx.Client(base_url=live["url"], auth=auth, timeout=10) as c:
        r = c.get("/me")
        assert r.status_code == 200, r.text
        r = c.post("/auth/whoami", content=_utf8_json(), headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        assert r.json()["bodySha256"] == hashlib.sha256(_utf8_json()).hexdigest()
        r = c.get("/auth/whoami", params={"$top": "10", "q": "é x"})
        assert r.status_code == 200, r.text
        header = r.request.headers["Authorization"]
        status, body = _raw_get(str(r.request.url), header)
        assert (status, body["error"]) == (401, "nonce_reused")


def test_httpx_async(live: Dict[str, str]) -> None:
    async def run() -> None:
        auth = ArmorPskAuth(live["key_id"], live["secret"], sign_query=True)
        async with httpx.AsyncClient(base_url=live["url"], auth=auth, timeout=10) as c:
            rs = await asyncio.gather(*(c.get("/me") for _ in range(4)))
            assert [r.status_code for r in rs] == [200] * 4
            r = await c.post("/auth/whoami", json=BODY)
            assert r.status_code == 200, r.text
            assert r.json()["bodyLength"] == len(r.request.content)

            async def chunks():  # type: ignore[no-untyped-def]
                yield "streamed ".encode()
                yield "bödy".encode()

            r = await c.post("/auth/whoami", content=chunks())
            assert r.status_code == 200, r.text
            assert r.json()["bodySha256"] == hashlib.sha256("streamed bödy".encode()).hexdigest()
            r = await c.get("/accounts?$top=5")
            assert r.status_code == 200, r.text

    asyncio.run(run())
