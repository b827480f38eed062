from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import armor_psk
from armor_psk import ArmorPskAuth, ArmorPskError

FILE = (
    "# mine\n[default]\nkey_id = k1\nsecret_key = s=#;1\n\n"
    "; other\n[prod]\nKEY_ID=k2\nsecret_key = apsk_prod\nendpoint = https://x\n"
)


@pytest.fixture
def creds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("ARMOR_KEY_ID", "ARMOR_SECRET_KEY", "ARMOR_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "credentials"
    path.write_text(FILE)
    path.chmod(0o600)
    monkeypatch.setenv("ARMOR_CREDENTIALS_FILE", str(path))
    return path


def test_environment_comes_before_the_profile(creds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARMOR_KEY_ID", "env-key")
    monkeypatch.setenv("ARMOR_SECRET_KEY", "env-secret")
    assert armor_psk.load_credentials() == ("env-key", "env-secret")


def test_missing_values_come_from_the_default_profile(creds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert armor_psk.load_credentials() == ("k1", "s=#;1")
    monkeypatch.setenv("ARMOR_KEY_ID", "env-key")
    assert armor_psk.load_credentials() == ("env-key", "s=#;1")


def test_profile_is_chosen_by_argument_then_armor_profile(creds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert armor_psk.load_credentials("prod") == ("k2", "apsk_prod")
    monkeypatch.setenv("ARMOR_PROFILE", "prod")
    assert armor_psk.load_credentials() == ("k2", "apsk_prod")
    assert ArmorPskAuth().key_id == "k2"


def test_home_locates_the_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARMOR_CREDENTIALS_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert armor_psk.credentials_path() == tmp_path / ".config" / "armor" / "credentials"


def test_missing_credentials_say_what_and_where(creds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ArmorPskError, match=r"no credentials: .*no profile \[nope\]"):
        ArmorPskAuth(profile="nope")
    creds.unlink()
    with pytest.raises(ArmorPskError, match="no credentials file at"):
        ArmorPskAuth()
    monkeypatch.setenv("ARMOR_KEY_ID", "k")
    with pytest.raises(ArmorPskError, match="no secret key"):
        ArmorPskAuth()


def test_profile_without_a_secret_is_named(creds: Path) -> None:
    creds.write_text("[a]\nkey_id = k\n")
    with pytest.raises(ArmorPskError, match=r"profile \[a\] in .* has no secret_key"):
        armor_psk.load_credentials("a")


@pytest.mark.parametrize(
    "text, line",
    [("secret_key = hunter2\n", "line 1"), ("[a]\nhunter2\n", "line 2"), ("[a]\n[a]\n", "line 2"),
     ("[a]\nk=1\nK=hunter2\n", "line 3"), ("[a\n", "line 1")],
)
def test_malformed_file_errors_name_the_line_not_its_content(creds: Path, text: str, line: str) -> None:
    creds.write_text(text)
    with pytest.raises(ArmorPskError) as e:
        armor_psk.load_credentials("a")
    assert line in str(e.value)
    assert "hunter2" not in str(e.value)


def test_file_open_to_others_draws_a_warning(creds: Path) -> None:
    creds.chmod(0o644)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        armor_psk.load_credentials()
    assert any("chmod 600" in str(x.message) for x in w)


def test_repr_redacts_the_secret() -> None:
    auth = ArmorPskAuth("kid", "apsk_very-secret")
    assert "apsk_very-secret" not in repr(auth)
    assert "<redacted>" in repr(auth)
    assert "apsk_very-secret" not in str(vars(auth).keys())


def test_non_ascii_key_id_is_refused_at_construction() -> None:
    with pytest.raises(ArmorPskError, match="visible ASCII"):
        ArmorPskAuth("clé", "s")

