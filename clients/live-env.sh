#!/usr/bin/env bash
# Runs a command next to a fresh `armor serve` with an API key ready:
#
#   clients/live-env.sh [PATH/TO/armor] -- COMMAND [ARGS...]
#
# Starts the server on 127.0.0.1 (port 0) with a throwaway data directory,
# logs its admin in (authorize -> token), creates an API key, then runs
# COMMAND with
#
#   ARMOR_TEST_URL         http://127.0.0.1:PORT
#   ARMOR_TEST_KEY_ID      the key's id
#   ARMOR_TEST_SECRET_KEY  its secret
#   ARMOR_TEST_REQUIRE_LIVE=1   (the clients' live tests fail, not skip, without the above)
#
# and stops the server. Exits with COMMAND's status (2 when the setup fails).
# The default binary is target/debug/armor. Needs curl and python3.
set -euo pipefail

ROOT=$(cd "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
ARMOR_BIN=$ROOT/target/debug/armor
if [ "${1:-}" != "--" ] && [ $# -gt 0 ]; then ARMOR_BIN=$1; shift; fi
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 [PATH/TO/armor] -- COMMAND [ARGS...]" >&2; exit 2; }
[ -x "$ARMOR_BIN" ] || { echo "live-env.sh: $ARMOR_BIN is not an executable (cargo build -p armor --bin armor)" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/armor-clients.XXXXXX")
SERVER_PID=
stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    [ -z "$SERVER_PID" ] || wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}
cleanup() { stop_server; rm -rf -- "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

fail_setup() {
    echo "live-env.sh: $*" >&2
    [ -s "$WORK/server.err" ] && tail -n 20 "$WORK/server.err" >&2
    exit 2
}

# json FIELD < body: one top-level string or number of a JSON object.
json() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# post PATH JSON [AUTHORIZATION]: the response body; fails on a non-2xx answer.
post() {
    local auth=()
    [ -z "${3:-}" ] || auth=(-H "Authorization: $3")
    curl -fsS --max-time 10 --noproxy '*' -X POST "$URL$1" \
        -H 'Content-Type: application/json' "${auth[@]}" --data-binary "$2"
}

EMAIL=clients-admin@example.com
PASSWORD="Clients-$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')-9!"

mkdir -p "$WORK/data"
ARMOR_ADMIN_EMAIL=$EMAIL ARMOR_ADMIN_PASSWORD=$PASSWORD \
    "$ARMOR_BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" \
    >"$WORK/server.out" 2>"$WORK/server.err" </dev/null &
SERVER_PID=$!

URL=
for _ in $(seq 1 300); do
    URL=$(sed -n 's#.*armor listening on \(http://127\.0\.0\.1:[0-9]\{1,5\}\).*#\1#p' "$WORK/server.out" | head -n 1)
    [ -z "$URL" ] || break
    kill -0 "$SERVER_PID" 2>/dev/null || fail_setup "armor serve exited before listening"
    sleep 0.1
done
[ -n "$URL" ] || fail_setup "armor serve printed no 'armor listening on' line within 30 s"

login=$(E=$EMAIL P=$PASSWORD python3 -c \
    'import json, os; print(json.dumps({"username": os.environ["E"], "password": os.environ["P"]}))')
code=$(post /auth/authorize "$login" | json code) || fail_setup "POST /auth/authorize failed"
token=$(post /auth/token "{\"code\":\"$code\",\"grant_type\":\"authorization_code\"}" | json access_token) \
    || fail_setup "POST /auth/token failed"
user_id=$(curl -fsS --max-time 10 --noproxy '*' "$URL/me" -H "Authorization: FH-AUTH $token" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["user"]["links"]["userId"])') \
    || fail_setup "GET /me with the admin's token failed"
post "/users/$user_id/keys" '{"name":"clients tests"}' "FH-AUTH $token" >"$WORK/key.json" \
    || fail_setup "POST /users/$user_id/keys failed"

ARMOR_TEST_URL=$URL
ARMOR_TEST_KEY_ID=$(json id <"$WORK/key.json")
ARMOR_TEST_SECRET_KEY=$(json apiKey <"$WORK/key.json")
rm -f "$WORK/key.json"
export ARMOR_TEST_URL ARMOR_TEST_KEY_ID ARMOR_TEST_SECRET_KEY ARMOR_TEST_REQUIRE_LIVE=1
echo "live-env: armor serve at $URL (pid $SERVER_PID), key $ARMOR_TEST_KEY_ID"

set +e
"$@"
rc=$?
set -e
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "live-env: armor serve exited while the command ran" >&2
    [ "$rc" -ne 0 ] || rc=1
fi
[ "$rc" -eq 0 ] || { echo "--- armor serve stderr (last 20 lines) ---"; tail -n 20 "$WORK/server.err"; } >&2
exit "$rc"
