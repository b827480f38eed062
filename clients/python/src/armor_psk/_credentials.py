"""Credentials as the ``armor`` command line finds them.

The key id comes from ``ARMOR_KEY_ID`` and the secret from
``ARMOR_SECRET_KEY``; whatever is missing is read from a profile of the
credentials file (``ARMOR_CREDENTIALS_FILE``, else
``~/.config/armor/credentials``). The profile is the one named, else
``ARMOR_PROFILE``, else ``default``.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from ._sign import ArmorPskError

DEFAULT_PROFILE = "default"


def credentials_path(environ: Optional[Mapping[str, str]] = None) -> Path:
    """Where the credentials file is: ``$ARMOR_CREDENTIALS_FILE``, else
    ``$HOME/.config/armor/credentials``."""
    env = os.environ if environ is None else environ
    explicit = env.get("ARMOR_CREDENTIALS_FILE")
    if explicit:
        return Path(explicit)
    home = env.get("HOME") or env.get("USERPROFILE")
    if not home:
        raise ArmorPskError(
            "cannot locate the credentials file: set HOME or ARMOR_CREDENTIALS_FILE"
        )
    return Path(home) / ".config" / "armor" / "credentials"


def parse_profiles(text: str) -> Dict[str, Dict[str, str]]:
    """Parses the file's text: ``{profile: {lowercased key: value}}``.

    Blank lines and lines starting with ``#`` or ``;`` are ignored, ``[name]``
    opens a profile, every other line is ``key = value`` split at the first
    ``=`` (values are never quoted, there are no inline comments). A repeated
    profile or key is an error. Errors give the line number, never the line.
    """
    profiles: Dict[str, Dict[str, str]] = {}
    headers: Dict[str, int] = {}
    key_lines: Dict[Tuple[str, str], int] = {}
    current: Optional[str] = None
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith(";"):
            continue
        if line.startswith("["):
            name = line[1:-1].strip() if line.endswith("]") else ""
            if not name:
                raise ArmorPskError(f"line {n}: a section header is `[profile-name]`")
            if name in headers:
                raise ArmorPskError(
                    f"line {n}: profile [{name}] already started on line {headers[name]}"
                )
            headers[name] = n
            profiles[name] = {}
            current = name
            continue
        if "=" not in line:
            raise ArmorPskError(
                f"line {n}: expected `[profile]`, `key = value` or a `#` comment"
            )
        key, value = line.split("=", 1)
        key = key.strip().lower()
        if not key:
            raise ArmorPskError(f"line {n}: missing key before `=`")
        if current is None:
            raise ArmorPskError(f"line {n}: `{key} = ...` comes before any `[profile]` header")
        if (current, key) in key_lines:
            raise ArmorPskError(
                f"line {n}: `{key}` already set on line {key_lines[(current, key)]} "
                f"of profile [{current}]"
            )
        key_lines[(current, key)] = n
        profiles[current][key] = value.strip()
    return profiles


def _read(path: Path) -> Optional[str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ArmorPskError(f"cannot read {path}: {e.strerror}") from None
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if os.name == "posix" and mode & 0o077:
            warnings.warn(
                f"{path} is accessible to group or others (mode {mode:04o}); "
                f"run `chmod 600 {path}`",
                stacklevel=4,
            )
    except OSError:
        pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ArmorPskError(f"{path} is not valid UTF-8") from None


def load_credentials(
    profile: Optional[str] = None, environ: Optional[Mapping[str, str]] = None
) -> Tuple[str, str]:
    """``(key_id, secret)`` from the environment, then the profile file.

    Raises :class:`ArmorPskError` naming what is missing and where it looked.
    """
    env = os.environ if environ is None else environ
    name = profile or env.get("ARMOR_PROFILE") or DEFAULT_PROFILE
    key_id = env.get("ARMOR_KEY_ID") or None
    secret = env.get("ARMOR_SECRET_KEY") or None
    if key_id is None or secret is None:
        path = credentials_path(env)
        text = _read(path)
        found: Optional[Dict[str, str]] = None
        if text is None:
            why = f"no credentials file at {path}"
        else:
            try:
                found = parse_profiles(text).get(name)
            except ArmorPskError as e:
                raise ArmorPskError(f"{e} (in {path})") from None
            why = f"no profile [{name}] in {path}" if found is None else ""
        values = found or {}
        missing: List[str] = []
        if key_id is None:
            key_id = values.get("key_id") or None
            if key_id is None:
                missing.append("key_id")
        if secret is None:
            secret = values.get("secret_key") or None
            if secret is None:
                missing.append("secret_key")
        if key_id is None or secret is None:
            if found is not None:
                why = f"profile [{name}] in {path} has no {' or '.join(missing)}"
            what = "no key id" if key_id is None else "no secret key"
            if key_id is None and secret is None:
                what = "no credentials"
            raise ArmorPskError(
                f"{what}: set ARMOR_KEY_ID and ARMOR_SECRET_KEY, pass key_id and "
                f"secret, or run `armor configure --profile {name}` ({why})"
            )
    return key_id, secret
