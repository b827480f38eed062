"""ARMOR-PSK request signing.

>>> import armor_psk, requests
>>> auth = armor_psk.ArmorPskAuth()  # ARMOR_KEY_ID/ARMOR_SECRET_KEY or the profile
>>> requests.get("https://armor.example.com/me", auth=auth).json()  # doctest: +SKIP
"""

from ._auth import ArmorPskAuth
from ._credentials import credentials_path, load_credentials, parse_profiles
from ._sign import SCHEME, ArmorPskError, new_nonce, sign

__version__ = "0.1.0"

__all__ = [
    "SCHEME",
    "ArmorPskAuth",
    "ArmorPskError",
    "credentials_path",
    "load_credentials",
    "new_nonce",
    "parse_profiles",
    "sign",
]
