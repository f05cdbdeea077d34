#!/usr/bin/env bash
# The official OpenAI Python SDK against gw: tests/sdk/test_openai_sdk.py.
#
#   bash tests/sdk/run.sh
#
# Builds gw (debug: `cargo build -p gw-runtime --bin gw`; GW_BIN=path uses a given binary
# instead), installs the `openai` package with pip when missing, starts `gw mock` and `gw serve`
# on a copy of the seed 001 policy (examples/unified-proxy) whose upstream target points at the
# mock, all on free loopback ports, and runs the test with python3. Exits non-zero when a test
# fails. A missing python3 or an `openai` that cannot be installed skips the test (exit 0)
# unless CI=true, where it fails. Every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'sdk: %s\n' "$*" >&2; exit 1; }
missing() { # a dependency is missing: fail under CI, skip elsewhere
    if [[ ${CI:-} == true ]]; then die "$1 (CI=true: failing instead of skipping)"; fi
    printf 'sdk: SKIPPED: %s\n' "$1" >&2
    exit 0
}

# ---------------------------------------------------------------- dependencies

command -v "$PYTHON" >/dev/null 2>&1 || missing "$PYTHON not found"
if ! "$PYTHON" -c 'import openai' >/dev/null 2>&1; then
    step "installing openai (pip)"
    # A Debian system Python refuses plain pip installs (PEP 668); fall back to a user install.
    "$PYTHON" -m pip install --quiet openai ||
        "$PYTHON" -m pip install --quiet --user --break-system-packages openai ||
        missing "cannot install the openai package with pip"
    "$PYTHON" -c 'import openai' >/dev/null 2>&1 || missing "openai installed but not importable by $PYTHON"
fi
command -v curl >/dev/null 2>&1 || missing "curl not found"

if [[ -n ${GW_BIN:-} ]]; then
    GW=$GW_BIN
else
    step "cargo build -p gw-runtime --bin gw"
    cargo build -p gw-runtime --bin gw >&2
    TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    GW=${TARGET_DIR:-$ROOT/target}/debug/gw
fi
[[ -x $GW ]] || die "no gw binary at $GW"

# ---------------------------------------------------------------- processes

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gw-sdk.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # wait_http NAME URL LOG
    local i
    for ((i = 0; i < 300; i++)); do
        if curl -s -o /dev/null --max-time 1 "$2"; then return 0; fi
        sleep 0.05
    done
    cat "$3" >&2 || true
    die "$1 did not come up at $2"
}

MOCK_PORT=$(free_port)
step "gw mock on 127.0.0.1:$MOCK_PORT"
"$GW" mock --listen "127.0.0.1:$MOCK_PORT" >"$TMP/mock.log" 2>&1 &
PIDS+=($!)
wait_http mock "http://127.0.0.1:$MOCK_PORT/health" "$TMP/mock.log"

GW_PORT=$(free_port)
ADMIN_PORT=$(free_port)
cp -r "$ROOT/examples/unified-proxy" "$TMP/policy"
sed -i "s#\"http://127.0.0.1:9102\"#\"http://127.0.0.1:$MOCK_PORT\"#" "$TMP/policy/gateway.gwp"
grep -q "127.0.0.1:$MOCK_PORT" "$TMP/policy/gateway.gwp" || die "could not point the policy at the mock"

step "gw serve examples/unified-proxy (copy) on 127.0.0.1:$GW_PORT"
BACKEND_API_KEY=sdk-test-backend-key GW_ADMIN_TOKEN=sdk-test-admin \
    "$GW" serve "$TMP/policy/gateway.gwp" --listen "127.0.0.1:$GW_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
    >"$TMP/gw.log" 2>&1 &
PIDS+=($!)
wait_http gw "http://127.0.0.1:$GW_PORT/health" "$TMP/gw.log"

# ---------------------------------------------------------------- the test

step "OpenAI SDK test"
status=0
GW_SDK_BASE_URL="http://127.0.0.1:$GW_PORT/proxy/miniai/v2" GW_SDK_USER_KEY=sk-user-1 \
    "$PYTHON" "$ROOT/tests/sdk/test_openai_sdk.py" || status=$?
if ((status != 0)); then
    printf '\n--- gw log\n' >&2
    tail -n 50 "$TMP/gw.log" >&2 || true
    printf '\n--- mock log\n' >&2
    tail -n 20 "$TMP/mock.log" >&2 || true
    die "the OpenAI SDK test failed (exit $status)"
fi
