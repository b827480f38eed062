#!/usr/bin/env bash
# Compatibility checks: clients published for the vendor's API against a
# freshly started `armor serve` (findings in docs/compat-notes.md).
#
#   tests/compat/run.sh PATH/TO/armor
#
#  1. psk-csharp: the vendor's C# AuthHeaderHelper (AuthHeaderHelper.cs, as
#     published) compiled with mcs and run with mono signs GET /me with a key
#     made for the admin; the server must answer 200, and the very same header
#     sent again must be refused as a replay (401 nonce_reused).
#  2. armorapi: the published `armorapi` PyPI client logs in with the admin's
#     password and reads /me (armorapi_test.py; it installs armorapi into a
#     venv, cached under ~/.cache/armor-compat unless ARMOR_COMPAT_VENV says
#     where).
#
# Needs curl, python3 (with venv), openssl, mcs and mono (Debian: mono-mcs),
# and PyPI the first time. Everything stays on 127.0.0.1; every HTTP call has
# a time limit. Prints `compat: N passed, M failed` last; exits 1 on any
# failure, 2 on bad usage.
set -euo pipefail

usage() { echo "usage: $0 PATH/TO/armor" >&2; exit 2; }
[ $# -eq 1 ] || usage
ARMOR_BIN=$1
case $ARMOR_BIN in */*) ;; *) ARMOR_BIN=$(command -v -- "$ARMOR_BIN" || true) ;; esac
[ -n "$ARMOR_BIN" ] && [ -x "$ARMOR_BIN" ] || { echo "run.sh: $1 is not an executable" >&2; exit 2; }
ARMOR_BIN=$(cd "$(dirname -- "$ARMOR_BIN")" && pwd)/$(basename -- "$ARMOR_BIN")

HERE=$(cd "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/armor-compat.XXXXXX")
SERVER_PID=
URL=
TESTS=(psk-csharp armorapi)
passed=0
failed=0

EMAIL=${ARMOR_COMPAT_EMAIL:-compat-admin@example.com}
PASSWORD="Compat-$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')-9!"

stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -n "$SERVER_PID" ]; then
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}
cleanup() { stop_server; rm -rf -- "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

server_log_tail() {
    if [ -s "$WORK/server.err" ]; then
        echo "--- armor serve stderr (last 20 lines) ---"
        tail -n 20 "$WORK/server.err"
        echo "---"
    fi
}

summary() { echo "compat: $passed passed, $failed failed"; }

# Setup failed: every test counts as failed.
fail_setup() {
    echo "setup: $*" >&2
    server_log_tail >&2
    failed=${#TESTS[@]}
    passed=0
    for t in "${TESTS[@]}"; do echo "FAIL $t (setup failed)"; done
    summary
    exit 1
}

# http METHOD PATH [AUTHORIZATION] [JSON_BODY_FILE]
# Prints the status code ("000" when curl failed); the body is in $WORK/resp.
http() {
    local method=$1 path=$2 auth=${3:-} body=${4:-} status
    local args=(-sS --max-time 10 --noproxy '*' -o "$WORK/resp" -w '%{http_code}'
                -X "$method" -H 'Accept: application/json')
    if [ -n "$auth" ]; then args+=(-H "Authorization: $auth"); fi
    if [ -n "$body" ]; then args+=(-H 'Content-Type: application/json' --data-binary "@$body"); fi
    : >"$WORK/resp"
    if ! status=$(curl "${args[@]}" "$URL$path"); then
        echo "curl: $method $path failed" >&2
        status=000
    fi
    echo "$status"
}

# json_get FILE KEY...: the value at that path (strings bare, others as JSON).
json_get() {
    python3 - "$@" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2:]:
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v if isinstance(v, str) else json.dumps(v))
PY
}

# The first 300 bytes of the last response body, for messages.
resp_head() { head -c 300 "$WORK/resp" 2>/dev/null | tr '\n' ' '; }

# ---------------------------------------------------------------------------
# Setup: start the server, log in (authorize -> token), make an API key.
# ---------------------------------------------------------------------------
for tool in curl python3; do
    command -v "$tool" >/dev/null || fail_setup "$tool is not installed"
done

mkdir -p "$WORK/data"
ARMOR_ADMIN_EMAIL=$EMAIL ARMOR_ADMIN_PASSWORD=$PASSWORD \
    "$ARMOR_BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" \
    >"$WORK/server.out" 2>"$WORK/server.err" </dev/null &
SERVER_PID=$!

for _ in $(seq 1 300); do
    URL=$(sed -n 's#.*armor listening on \(http://127\.0\.0\.1:[0-9]\{1,5\}\).*#\1#p' "$WORK/server.out" | head -n 1)
    if [ -n "$URL" ]; then break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || fail_setup "armor serve exited before printing 'armor listening on http://127.0.0.1:PORT'"
    sleep 0.1
done
[ -n "$URL" ] || fail_setup "no 'armor listening on http://127.0.0.1:PORT' line on stdout within 30s"
echo "server: $URL (pid $SERVER_PID)"

E=$EMAIL P=$PASSWORD python3 -c \
    'import json, os; print(json.dumps({"username": os.environ["E"], "password": os.environ["P"]}))' \
    >"$WORK/authorize.json"
status=$(http POST /auth/authorize "" "$WORK/authorize.json")
[ "$status" = 200 ] || fail_setup "POST /auth/authorize answered $status: $(resp_head)"
code=$(json_get "$WORK/resp" code) || fail_setup "POST /auth/authorize: no \"code\" in $(resp_head)"

C=$code python3 -c \
    'import json, os; print(json.dumps({"code": os.environ["C"], "grant_type": "authorization_code"}))' \
    >"$WORK/token.json"
status=$(http POST /auth/token "" "$WORK/token.json")
[ "$status" = 200 ] || fail_setup "POST /auth/token answered $status: $(resp_head)"
TOKEN=$(json_get "$WORK/resp" access_token) || fail_setup "POST /auth/token: no \"access_token\" in $(resp_head)"

status=$(http GET /me "FH-AUTH $TOKEN")
[ "$status" = 200 ] || fail_setup "GET /me with FH-AUTH answered $status: $(resp_head)"
USER_ID=$(json_get "$WORK/resp" user links userId 2>/dev/null || json_get "$WORK/resp" user id 2>/dev/null || echo 1)

python3 -c 'import json; print(json.dumps({"name": "compat run.sh"}))' >"$WORK/key.json"
status=$(http POST "/users/$USER_ID/keys" "FH-AUTH $TOKEN" "$WORK/key.json")
case $status in 200|201) ;; *) fail_setup "POST /users/$USER_ID/keys answered $status: $(resp_head)" ;; esac
# The key's id and secret. The brief's shape is {"id","apiKey","name",
# "createdDate"}: id = key id, apiKey = secret. A "secretKey"/"secret" member,
# if the server has one, is the secret and then "keyId"/"apiKey"/"id" the id.
if ! python3 - "$WORK/resp" >"$WORK/key.txt" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
if "secretKey" in d or "secret" in d:
    secret = d.get("secretKey", d.get("secret"))
    key_id = d.get("keyId") or d.get("apiKey") or d.get("id")
else:
    secret = d.get("apiKey")
    key_id = d.get("keyId") or d.get("id")
if not isinstance(key_id, (str, int)) or not isinstance(secret, str) or not secret:
    sys.exit(f"cannot tell the key id and secret apart in the members {sorted(d)}")
print(key_id)
print(secret)
PY
then
    fail_setup "POST /users/$USER_ID/keys: unexpected response shape"
fi
KEY_ID=$(sed -n 1p "$WORK/key.txt")
SECRET=$(sed -n 2p "$WORK/key.txt")
rm -f "$WORK/key.txt"
echo "setup: logged in as $EMAIL, made key $KEY_ID for user $USER_ID"

# ---------------------------------------------------------------------------
# The tests. Each runs in a subshell with errexit on; a non-zero exit fails it.
# ---------------------------------------------------------------------------
test_psk_csharp() {
    local missing=
    for tool in mcs mono; do command -v "$tool" >/dev/null || missing="$missing $tool"; done
    if [ -n "$missing" ]; then
        echo "missing:$missing (Debian: apt-get install -y mono-mcs)"
        return 1
    fi
    # -nowarn:219: the published helper assigns a variable it never uses.
    if ! timeout 300 mcs -nologo -nowarn:219 -out:"$WORK/driver.exe" \
            "$HERE/AuthHeaderHelper.cs" "$HERE/Driver.cs" >"$WORK/mcs.log" 2>&1; then
        cat "$WORK/mcs.log"
        return 1
    fi
    local header
    if ! header=$(ARMOR_KEY_ID=$KEY_ID ARMOR_SECRET_KEY=$SECRET ARMOR_REQUEST_PATH=/me \
                  ARMOR_REQUEST_METHOD=GET timeout 60 mono "$WORK/driver.exe"); then
        echo "mono driver.exe failed"
        return 1
    fi
    if ! [[ $header =~ ^ARMOR-PSK\ [^:]+:[A-Za-z0-9+/]+=*:([0-9]+):([0-9]+)$ ]] \
            || [ "${BASH_REMATCH[1]}" != "${BASH_REMATCH[2]}" ]; then
        echo "the helper printed an unexpected header: ${header%%:*}:..."
        return 1
    fi

    local status
    status=$(http GET /me "$header")
    if [ "$status" != 200 ]; then
        echo "GET /me signed by the vendor's C# helper answered $status: $(resp_head)"
        return 1
    fi
    if ! json_get "$WORK/resp" accounts 0 id >/dev/null 2>&1; then
        echo "GET /me answered 200 without accounts[0].id: $(resp_head)"
        return 1
    fi

    status=$(http GET /me "$header")
    local err
    err=$(json_get "$WORK/resp" error 2>/dev/null || true)
    if [ "$status" != 401 ] || [ "$err" != nonce_reused ]; then
        echo "the same header sent again answered $status ($err), expected 401 nonce_reused: $(resp_head)"
        return 1
    fi
    echo "psk-csharp: 200 on GET /me, then 401 nonce_reused on the replay"
}

test_armorapi() {
    ARMOR_TEST_URL=$URL ARMOR_TEST_EMAIL=$EMAIL ARMOR_TEST_PASSWORD=$PASSWORD \
        ARMOR_COMPAT_VENV=${ARMOR_COMPAT_VENV:-} \
        timeout 1200 python3 "$HERE/armorapi_test.py"
}

run_test() {
    local name=$1 fn=$2 rc
    echo "=== $name"
    set +e
    (set -e; "$fn")
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then
        echo "PASS $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name (exit $rc)"
        failed=$((failed + 1))
    fi
}

run_test psk-csharp test_psk_csharp
run_test armorapi test_armorapi

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "FAIL server-alive (armor serve exited during the tests)"
    failed=$((failed + 1))
fi
if [ "$failed" -gt 0 ]; then server_log_tail >&2; fi
stop_server
summary
[ "$failed" -eq 0 ]
