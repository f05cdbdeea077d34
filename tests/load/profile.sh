#!/usr/bin/env bash
# CPU profile of one request, counted in instructions (valgrind's callgrind), for gw-plain and
# gw-policy as tests/load/run.sh sets them up (seed 001 plus a token budget, limits raised so
# they never refuse; and a six-line `auth none` proxy). Instruction counts do not move with
# the neighbours on a shared machine the way wrk's timings do, so this is the figure to compare
# before and after a change to the hot path (issue 15).
#
#   bash tests/load/profile.sh                       # 2,000 requests per target
#   PROFILE_REQUESTS=500 bash tests/load/profile.sh
#   LOAD_GW=/path/to/gw bash tests/load/profile.sh   # profile a prebuilt gw (say, before a change)
#   PROFILE_KEEP=1 ...                               # keep the callgrind files, print their dir
#   PROFILE_REQUESTS=100 PROFILE_TOP=5 ...           # smoke run (CI)
#   PROFILE_MIX=sse ...                              # the streamed answer (8 SSE chunks)
#
# Each target runs under callgrind; on one keep-alive connection, after 200 warm-up requests
# the counters are zeroed (callgrind_control -z), PROFILE_REQUESTS sequential JSON chat
# requests are sent, and the counters dumped (callgrind_control -d). Printed: instructions per request in all,
# the ratio gw-policy / gw-plain, and per target the functions with the most inclusive cost per
# request (callgrind_annotate --inclusive=yes). All threads count: the audit writer's work is
# the policy's cost too.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
REQUESTS=${PROFILE_REQUESTS:-2000}
TOP=${PROFILE_TOP:-30}
MIX=${PROFILE_MIX:-json}
BACKEND_KEY=load-bench-backend-key

die() { printf 'profile: %s\n' "$*" >&2; exit 1; }
[[ $MIX == json || $MIX == sse ]] || die "PROFILE_MIX is json or sse"
if ! command -v valgrind >/dev/null 2>&1; then
    SUDO=()
    if [[ $(id -u) != 0 ]]; then SUDO=(sudo); fi
    printf '\n==> installing valgrind (apt-get)\n' >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >&2 ||
        { "${SUDO[@]}" apt-get update -q >&2 && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >&2; }
    command -v valgrind >/dev/null 2>&1 || die "valgrind still missing after installing it"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gw-profile.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ ${PROFILE_KEEP:-0} == 1 ]]; then printf 'profile: kept %s\n' "$TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

if [[ -n ${LOAD_GW:-} ]]; then
    GW=$LOAD_GW
else
    cargo build --release -p gw-runtime --bin gw >&2
    GW=$ROOT/target/release/gw
fi
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

MOCK_PORT=$(free_port)
"$GW" mock --listen "127.0.0.1:$MOCK_PORT" --delay-ms 0 --chunk-delay-ms 0 --record=false >"$TMP/mock.log" 2>&1 &
PIDS+=($!)

# The same edits as run.sh's gw-policy.
cp -r "$ROOT/examples/unified-proxy" "$TMP/policy"
sed -i \
    -e "s#\"http://127.0.0.1:9102\"#\"http://127.0.0.1:$MOCK_PORT\"#" \
    -e 's#rate 20/s burst 40; concurrent 10#rate 1000000/s burst 1000000; concurrent 100000#' \
    -e 's#^    auth    users via header "x-api-key", bearer#&\n    limit   tokens 1000000000/min per key#' \
    "$TMP/policy/gateway.gwp"
[[ $(grep -c 'concurrent 100000' "$TMP/policy/gateway.gwp") == 2 ]] || die "could not raise the tenant limits"
grep -q 'limit   tokens 1000000000/min per key' "$TMP/policy/gateway.gwp" || die "could not add the token budget"
mkdir -p "$TMP/plain"
printf '%s\n' 'gateway { listen "127.0.0.1:0" }' \
    "upstream backend { target \"http://127.0.0.1:$MOCK_PORT\" }" \
    'route chat {' '    when POST "/miniai/v2/chat/completions"' '    auth none' '    to   backend' '}' \
    >"$TMP/plain/gateway.gwp"

# measure PID PORT PATH: on one keep-alive connection (so one serving thread, its upstream
# connection already open), 200 warm-up chat requests, zero the counters, PROFILE_REQUESTS
# requests, dump. Every answer must be a 200.
measure() {
    python3 - "$@" "$REQUESTS" "$MIX" <<'EOF'
import http.client, json, subprocess, sys
pid, port, path, n, mix = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
doc = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello " * 150}]}
if mix == "sse":
    doc["stream"] = True
body = json.dumps(doc)
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
def send(count):
    for i in range(count):
        c.request("POST", path, body, {"content-type": "application/json", "x-api-key": "sk-user-1"})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            sys.exit(f"answer {i}: {r.status}")
send(200)
subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
send(n)
subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
EOF
}

declare -A PER_REQUEST
profile() { # profile NAME POLICY PATH
    local name=$1 port out
    port=$(free_port)
    out=$TMP/callgrind.$name
    BACKEND_API_KEY=$BACKEND_KEY GW_ADMIN_TOKEN=profile-admin GW_LOG=warn \
        valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
        "$GW" serve "$2" --listen "127.0.0.1:$port" --admin "127.0.0.1:$(free_port)" >"$TMP/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    # Under valgrind gw starts in seconds to a minute or two (compiling the policy, hashing keys).
    local up=0
    for ((i = 0; i < 1800; i++)); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then up=1; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    ((up)) || { cat "$TMP/$name.log" >&2; die "$name did not come up"; }
    measure "$pid" "$port" "$3" || die "$name: requests failed (log: $TMP/$name.log)"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    local dump
    dump=$(ls "$out.$pid".* | sort -t. -k3 -n | head -1)
    local total
    total=$(awk '/^summary:/ { print $2 }' "$dump")
    PER_REQUEST[$name]=$((total / REQUESTS))
    printf '\n==> %s: %d instructions per request (%d %s requests)\n' "$name" "${PER_REQUEST[$name]}" "$REQUESTS" "$MIX"
    # Function names only (the file paths are long), instructions per request.
    local per_request='/^ *[0-9,]+ .*:/ && shown < top {
        ir = $1; gsub(",", "", ir); sub(/^[^:]*:/, "", $0); sub(/ \[.*$/, "", $0)
        if ($0 ~ want) { printf "%9.0f  %s\n", ir / n, substr($0, 1, 140); shown++ } }'
    printf -- '--- self cost, top %d\n' "$TOP"
    callgrind_annotate --threshold=100 "$dump" 2>/dev/null | awk -v n="$REQUESTS" -v top="$TOP" -v want=. "$per_request"
    printf -- '--- inclusive cost of gw'"'"'s own functions, top %d\n' "$TOP"
    callgrind_annotate --threshold=100 --inclusive=yes "$dump" 2>/dev/null |
        awk -v n="$REQUESTS" -v top="$TOP" -v want='gw_(runtime|engine)' "$per_request"
}

profile gw-plain "$TMP/plain/gateway.gwp" /miniai/v2/chat/completions
profile gw-policy "$TMP/policy/gateway.gwp" /proxy/miniai/v2/chat/completions
printf '\ninstructions per request: gw-plain %d, gw-policy %d, policy/plain %s\n' \
    "${PER_REQUEST[gw-plain]}" "${PER_REQUEST[gw-policy]}" \
    "$(python3 -c "print(f'{${PER_REQUEST[gw-policy]} / ${PER_REQUEST[gw-plain]}:.2f}')")"
