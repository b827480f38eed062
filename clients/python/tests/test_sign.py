from __future__ import annotations

import re
import time

import pytest

import armor_psk
from armor_psk import ArmorPskError

KEY = "20a37099-4a0b-432f-bf46-5fa690a0405c"
SECRET = "apsk_test-secret"


def test_defaults_are_a_random_hex_nonce_and_the_current_time() -> None:
    before = int(time.time())
    a = armor_psk.sign(KEY, SECRET, "GET", "/me")
    b = armor_psk.sign(KEY, SECRET, "GET", "/me")
    m = re.fullmatch(rf"ARMOR-PSK {KEY}:[A-Za-z0-9+/]{{86}}==:([0-9a-f]{{32}}):([0-9]+)", a)
    assert m, a
    assert before <= int(m.group(2)) <= int(time.time())
    assert a.split(":")[2] != b.split(":")[2]


@pytest.mark.parametrize(
    "key_id, why",
    [("", "empty"), ("clé", "visible ASCII"), ("a:b", "':'"), ("k" * 129, "at most 128"),
     ("a b", "visible ASCII")],
)
def test_bad_key_id_is_refused_before_signing(key_id: str, why: str) -> None:
    with pytest.raises(ArmorPskError, match=re.escape(why)):
        armor_psk.sign(key_id, SECRET, "GET", "/me")


@pytest.mark.parametrize(
    "nonce, why",
    [("a:b", "':'"), ("n" * 129, "at most 128"), ("", "empty"), ("nönce", "visible ASCII")],
)
def test_bad_nonce_is_refused(nonce: str, why: str) -> None:
    with pytest.raises(ArmorPskError, match=re.escape(why)):
        armor_psk.sign(KEY, SECRET, "GET", "/me", nonce=nonce)


def test_nonce_of_128_characters_is_accepted() -> None:
    assert armor_psk.sign(KEY, SECRET, "GET", "/me", nonce="n" * 128, timestamp=1)


@pytest.mark.parametrize("path", ["me", "/users/jane doe", "/é", ""])
def test_path_not_as_sent_is_refused(path: str) -> None:
    with pytest.raises(ArmorPskError, match="path"):
        armor_psk.sign(KEY, SECRET, "GET", path)


def test_empty_secret_and_bad_method_and_timestamp_are_refused() -> None:
    with pytest.raises(ArmorPskError, match="secret"):
        armor_psk.sign(KEY, "", "GET", "/me")
    with pytest.raises(ArmorPskError, match="method"):
        armor_psk.sign(KEY, SECRET, "GE T", "/me")
    with pytest.raises(ArmorPskError, match="timestamp"):
        armor_psk.sign(KEY, SECRET, "GET", "/me", timestamp=-1)


def test_errors_never_carry_the_secret() -> None:
    with pytest.raises(ArmorPskError) as e:
        armor_psk.sign(KEY, SECRET, "GET", "/me", nonce="a:b")
    assert SECRET not in str(e.value)
    with pytest.raises(ArmorPskError) as e:
        armor_psk.sign("bad:id", SECRET, "GET", "/me")
    assert SECRET not in str(e.value)


def test_str_body_is_signed_as_utf8() -> None:
    body = '{"name":"Zoë – 東京"}'
    a = armor_psk.sign(KEY, SECRET, "POST", "/t", body, nonce="n", timestamp=1)
    b = armor_psk.sign(KEY, SECRET, "POST", "/t", body.encode("utf-8"), nonce="n", timestamp=1)
    assert a == b


def test_version_is_the_workspaces() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    cargo = (root / "Cargo.toml").read_text(encoding="utf-8")
    pyproject = (root / "clients" / "python" / "pyproject.toml").read_text(encoding="utf-8")
    assert f'\nversion = "{armor_psk.__version__}"\n' in cargo
    assert f'\nversion = "{armor_psk.__version__}"\n' in pyproject
