from __future__ import annotations

from typing import Any, Dict

import pytest

import armor_psk
from conftest import signing_vectors

VECTORS = signing_vectors()


def test_the_vectors_file_has_signing_vectors() -> None:
    assert len(VECTORS) >= 17


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_sign_reproduces_the_vector_authorization(v: Dict[str, Any]) -> None:
    got = armor_psk.sign(
        v["keyId"],
        v["secretKey"],
        v["method"],
        v["requestPath"],
        v["body"],
        nonce=v["nonce"],
        timestamp=v["timestamp"],
        sign_query="?" in v["requestPath"],
    )
    assert got == v["authorization"]


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_bytes_body_signs_like_the_str_body(v: Dict[str, Any]) -> None:
    got = armor_psk.sign(
        v["keyId"],
        v["secretKey"],
        v["method"],
        v["requestPath"],
        v["body"].encode("utf-8"),
        nonce=v["nonce"],
        timestamp=v["timestamp"],
        sign_query="?" in v["requestPath"],
    )
    assert got == v["authorization"]


def test_vendor_form_leaves_the_query_out_of_the_signature() -> None:
    v = next(v for v in VECTORS if v["name"] == "get-query-vendor-form")
    got = armor_psk.sign(
        v["keyId"], v["secretKey"], "GET", v["requestPath"] + "?$top=10&x=1",
        nonce=v["nonce"], timestamp=v["timestamp"],
    )
    assert got == v["authorization"]
