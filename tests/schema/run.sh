#!/usr/bin/env bash
# schemathesis against a fresh `armor serve`, from its own /openapi.json:
#   1. without credentials: every check (`--checks all`: no 5xx, status
#      codes, content types and bodies as documented, schema-invalid input
#      refused, schema-valid input accepted, 405 with `Allow` for other
#      methods), and every operation that needs a caller answers 401;
#   2. signed with ARMOR-PSK by a hook (tests/schema/hooks.py): every check,
#      and the same request without the credential, or with a made-up
#      one, answers 401;
#   3. with the owner's FH-AUTH token: the same, on the routes that refuse
#      API keys too (logout, soft delete, status and key deletion are left
#      out: they would end the run's own credentials).
# Per-operation settings: tests/schema/schemathesis.toml.
#
#   tests/schema/run.sh [path/to/armor]     (default target/debug/armor)
#
# schemathesis is installed from PyPI into a venv cached under
# ~/.cache/armor-compat (ARMOR_SCHEMA_VENV overrides). ARMOR_SCHEMA_EXAMPLES
# (default 25) bounds the examples per operation.
set -euo pipefail
here=$(cd "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
armor=$(realpath "${1:-target/debug/armor}")
venv=${ARMOR_SCHEMA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/armor-compat/schemathesis-4}
examples=${ARMOR_SCHEMA_EXAMPLES:-25}

if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'schemathesis>=4.3,<5'
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/armor-schema.XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ARMOR_ADMIN_EMAIL=owner@example.com ARMOR_ADMIN_PASSWORD='schema test password' \
  "$armor" serve --listen 127.0.0.1:0 --data-dir "$work/data" --auth-failure-limit off \
  >"$work/out" 2>"$work/log" &
pid=$!
url=
for _ in $(seq 1 100); do
  url=$(sed -n 's/^armor listening on //p' "$work/out")
  [ -n "$url" ] && break
  sleep 0.2
done
[ -n "$url" ] || { cat "$work/log"; echo "armor did not start" >&2; exit 1; }

# A key to sign with.
code=$(curl -sf "$url/auth/authorize" -H 'content-type: application/json' \
  -d '{"username":"owner@example.com","password":"schema test password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["code"])')
token=$(curl -sf "$url/auth/token" -H 'content-type: application/json' \
  -d "{\"code\":\"$code\",\"grant_type\":\"authorization_code\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
key=$(curl -sf -X POST "$url/users/1/keys" -H "Authorization: FH-AUTH $token" \
  -H 'content-type: application/json' -d '{"name":"schemathesis"}')
export ARMOR_KEY_ID=$(printf '%s' "$key" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
export ARMOR_SECRET_KEY=$(printf '%s' "$key" | python3 -c 'import json,sys; print(json.load(sys.stdin)["apiKey"])')

export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=hooks
# schemathesis keeps a cache in its working directory: the temporary one.
cd "$work"
common=(--max-examples "$examples" --seed 8 --no-shrink --request-timeout 20
  --exclude-path /auth/logout --exclude-path /users/softDelete --exclude-path /users/status
  --exclude-path-regex '^/users/\{[^}]+\}/keys/\{[^}]+\}$'
  --suppress-health-check all --warnings off)
status=0
echo "==> schemathesis, without credentials"
ARMOR_SCHEMA_MODE=anonymous "$venv/bin/st" --config-file "$here/schemathesis.toml" run "$url/openapi.json" "${common[@]}" \
  --checks all || status=1
echo "==> schemathesis, signed with ARMOR-PSK"
ARMOR_SCHEMA_MODE=signed "$venv/bin/st" --config-file "$here/schemathesis.toml" run "$url/openapi.json" "${common[@]}" \
  --checks all || status=1
echo "==> schemathesis, with the owner's FH-AUTH token"
ARMOR_SCHEMA_MODE=password ARMOR_TOKEN=$token \
  "$venv/bin/st" --config-file "$here/schemathesis.toml" run "$url/openapi.json" "${common[@]}" \
  --checks all || status=1
# The log holds no secret the run made.
if grep -qF -e "$ARMOR_SECRET_KEY" -e "$token" -e apsk_ "$work/log"; then
  echo "the server log holds a secret" >&2
  status=1
fi
exit $status
