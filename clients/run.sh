#!/usr/bin/env bash
# Builds and tests the Python, TypeScript and Go clients, each against the
# shared vectors and against one live `armor serve` (clients/live-env.sh).
#
#   clients/run.sh [PATH/TO/armor]      (default target/debug/armor)
#
# Installs what is missing first: Debian's golang-go when `go` is absent
# (apt-get, as root or through sudo); pytest, requests, httpx and mypy in a
# virtual environment cached under ~/.cache/armor-compat/clients-python
# (ARMOR_CLIENTS_VENV overrides); typescript from the committed
# package-lock.json (npm ci). Runs every suite even when one fails, prints
# `clients: N passed, M failed` (suites) last and exits 1 on any failure.
set -euo pipefail

ROOT=$(cd "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/clients
VENV=${ARMOR_CLIENTS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/armor-compat/clients-python}
PY_REQS=('pytest>=8,<10' 'requests>=2.31,<3' 'httpx>=0.27,<1' 'mypy>=1.10,<3' 'types-requests>=2.31')

log() { printf '\n--> %s\n' "$*"; }

run_suites() {
    local passed=0 failed=0 names=() name rc
    suite() {
        name=$1; shift
        log "$name"
        # Not `if (...)`: errexit would be off inside the subshell.
        set +e
        (set -e; "$@")
        rc=$?
        set -e
        if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); names+=("$name"); fi
    }
    suite python python_suite
    suite typescript typescript_suite
    suite go go_suite
    [ "$failed" -eq 0 ] || echo "failed suites: ${names[*]}"
    echo "clients: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

python_suite() {
    cd "$HERE/python"
    "$VENV/bin/python" -m mypy --no-error-summary
    "$VENV/bin/python" -m pytest -p no:cacheprovider -q
}

typescript_suite() {
    cd "$HERE/typescript"
    node --test test/*.test.mjs
}

go_suite() {
    cd "$HERE/go"
    local unformatted
    unformatted=$(gofmt -l .)
    [ -z "$unformatted" ] || { echo "gofmt: not formatted: $unformatted"; return 1; }
    GOPROXY=off GOFLAGS=-mod=mod go vet ./...
    GOPROXY=off GOFLAGS=-mod=mod go test -count=1 -v ./...
}

# Re-entered by live-env.sh with the server running.
if [ "${1:-}" = "--suites" ]; then
    run_suites
    exit
fi

ARMOR_BIN=${1:-$ROOT/target/debug/armor}

if ! command -v go >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || { echo "run.sh: no go and no apt-get to install golang-go" >&2; exit 1; }
    sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    log "installing golang-go"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends golang-go >/dev/null
fi
go version

stamp="${PY_REQS[*]}"
if ! [ -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.armor-reqs" 2>/dev/null)" != "$stamp" ] \
        || ! "$VENV/bin/python" -c 'import pytest, requests, httpx, mypy' 2>/dev/null; then
    log "python: a virtual environment at $VENV"
    rm -rf -- "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_REQS[@]}"
    printf '%s' "$stamp" >"$VENV/.armor-reqs"
fi
"$VENV/bin/python" --version

log "typescript: npm ci, tsc"
(cd "$HERE/typescript" && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
node --version

"$HERE/live-env.sh" "$ARMOR_BIN" -- "$HERE/run.sh" --suites
