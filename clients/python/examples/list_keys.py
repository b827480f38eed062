"""Who am I, in which accounts, and (with a password login) which API keys.

    ARMOR_KEY_ID=... ARMOR_SECRET_KEY=apsk_... python list_keys.py https://armor.example.com
    ARMOR_EMAIL=me@example.com ARMOR_PASSWORD=... python list_keys.py https://armor.example.com

Listing keys (GET /users/{id}/keys) is a password caller's route: an API key
gets 403 api_key_not_allowed there, by design. So the key part signs in with
FH-AUTH when ARMOR_EMAIL and ARMOR_PASSWORD are set.
"""

import os
import sys

import requests

from armor_psk import ArmorPskAuth

base = sys.argv[1].rstrip("/") if len(sys.argv) > 1 else "http://127.0.0.1:8080"

with requests.Session() as api:
    api.auth = ArmorPskAuth()  # ARMOR_KEY_ID/ARMOR_SECRET_KEY, else ~/.config/armor/credentials
    me = api.get(f"{base}/me", timeout=10)
    me.raise_for_status()
    user = me.json()["user"]
    print(f"signed in as {user['username']} (user {user['links']['userId']})")
    for account in api.get(f"{base}/accounts", timeout=10).json():
        print(f"  account {account['id']}: {account['name']} ({account['status']})")

if os.environ.get("ARMOR_EMAIL") and os.environ.get("ARMOR_PASSWORD"):
    login = {"username": os.environ["ARMOR_EMAIL"], "password": os.environ["ARMOR_PASSWORD"]}
    code = requests.post(f"{base}/auth/authorize", json=login, timeout=10).json()["code"]
    token = requests.post(
        f"{base}/auth/token", json={"code": code, "grant_type": "authorization_code"}, timeout=10
    ).json()["access_token"]
    headers = {"Authorization": f"FH-AUTH {token}"}
    user_id = user["links"]["userId"]
    keys = requests.get(f"{base}/users/{user_id}/keys", headers=headers, timeout=10)
    keys.raise_for_status()
    for key in keys.json():
        print(f"  key {key['id']} {key['name']!r} {key['keyStatus']}, last used {key['lastUsed']}")
    requests.post(f"{base}/auth/logout", headers=headers, timeout=10)
