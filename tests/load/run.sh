#!/usr/bin/env bash
# Load benchmark: four targets in one run on loopback, for a JSON and an SSE chat call:
#   direct     the mock upstream, called directly (the baseline every ratio is against)
#   nginx      nginx as a plain reverse proxy to it
#   gw-plain   gw as a plain proxy: one route, `auth none`, no limits, no audit (metrics are
#              always on)
#   gw-policy  gw on the real seed 001 policy (examples/unified-proxy/gateway.gwp) plus a token
#              budget: key auth, a body guard (`deny ... if not body.messages exists`), header
#              strip, backend key swap, path rewrite, tenant rate and concurrency limits, a token
#              budget per key (`limit tokens 1000000000/min per key`: charged on every request,
#              never refusing), the async audit log on, metrics on
#
#   bash tests/load/run.sh                      # 10 s per measurement (about 5 minutes in all)
#   LOAD_SECONDS=2 bash tests/load/run.sh       # quick smoke run (CI)
#   LOAD_GW=/path/to/gw bash tests/load/run.sh  # measure a prebuilt gw (say, before a change)
#
# What it does (DESIGN.md §6, issues 4 and 15 "What must show"):
#   1. builds gw in release (`cargo build --release -p gw-runtime --bin gw`; skipped with
#      LOAD_GW) and installs nginx and wrk from Debian (`apt-get install -y`, through sudo unless
#      root) when missing;
#   2. starts `gw mock` (release) on a free port as the one upstream: no delays, no recording;
#   3. starts gw-policy on a copy of seed 001 in a temp dir. Edits in the copy, all printed: the
#      upstream target points at the mock's port, the tenants' `rate 20/s burst 40; concurrent
#      10` become 1e6/s and 100000 so that they are still evaluated on every request but never
#      refuse (otherwise this would measure 429 answers), and the token budget line is added.
#      Before measuring, one request is echoed back by the mock (`x-mock-echo: 1`) and checked:
#      backend key injected, user key and x-forwarded-for gone, path rewritten, user-agent set.
#      The audit log goes to the temp dir (a few hundred MB, deleted at exit). gw-plain runs a
#      generated six-line policy;
#   4. starts nginx as a plain reverse proxy to the same mock (generated config in the temp
#      dir): `worker_processes 2` to match gw, whose runtime runs one worker thread per
#      core (2 here); upstream keepalive 64, HTTP/1.1, `Connection ""`, access_log off,
#      proxy_buffering off (gw never buffers responses either), keepalive_requests raised on both
#      sides (nginx's default of 1000 would close client and upstream connections gw keeps);
#   5. runs the same request mixes against every target with wrk (a Lua script sets the method,
#      body and headers and prints exact numbers when done):
#        json  POST chat completion, JSON answer (the seed's main call)
#        sse   the same with "stream": true: 8 SSE chunks, no delay between them
#      Each target and mix is measured twice after a warm-up (LOAD_WARMUP seconds):
#        loaded    wrk -t1 -c$LOAD_CONNECTIONS (32), as fast as it goes: throughput, and the CPU
#                  time the target's processes (gw; nginx master + workers; the mock) spend per
#                  request, read from /proc: the figure other load on the box moves least. wrk,
#                  the proxy (2 threads) and the mock (2 threads) share the 2 cores, so one wrk
#                  thread is enough; 32 connections keep the proxy saturated without measuring
#                  mostly queueing (latencies here include it).
#        unloaded  wrk -t1 -c1, one request every LOAD_GAP_MS (1) ms: the latency one request
#                  adds. Paced rather than back to back because wrk corrects latencies for
#                  coordinated omission against the mean interval between requests: back to back
#                  (~20 µs apart) one 10 ms scheduling hiccup on this shared box becomes hundreds
#                  of synthetic samples and p99 measures the neighbours, not the proxy. For the
#                  SSE mix its p50 is the whole stream's time (the mock sends the 8 chunks at
#                  once, so it is also the time to first byte within a few µs).
#      Requests carry `X-API-Key: sk-user-1` everywhere (harmless where unread). direct, nginx and
#      gw-plain are called at the path gw-policy forwards to (/miniai/v2/chat/completions);
#      gw-policy at /proxy/miniai/v2/chat/completions.
#      RSS (VmRSS, summed over a target's processes) is read idle (after start, before any
#      request) and after the run; the peak (VmHWM) after the run.
#   6. prints, per mix, requests/s, p50/p99 latency and CPU per request per target, then one
#      markdown table of the ratios (throughput × direct, CPU per request × gw-plain, added
#      latency with one connection, RSS) that the README carries verbatim, and the aims of issue
#      15 next to the measured figures. Any non-2xx answer or socket error makes the run fail
#      (exit 1): numbers made of errors are worthless. Aims are reported, never enforced (these
#      machines are shared and noisy; DESIGN §6: benchmarks, never timed tests).
#
# Environment:
#   LOAD_SECONDS       seconds per measurement (default 10)
#   LOAD_WARMUP        warm-up seconds per target and mix (default: 2, or 1 if LOAD_SECONDS < 5)
#   LOAD_CONNECTIONS   connections of the loaded measurement (default 32)
#   LOAD_MIXES         mixes to run, space separated (default "json sse")
#   LOAD_TARGETS       targets besides direct (always measured: every ratio needs it), default
#                      "nginx gw-plain gw-policy"
#   LOAD_GAP_MS        pause between unloaded requests, ms (default 1)
#   LOAD_GW            a gw binary to measure instead of building one
#   LOAD_KEEP=1        keep the temp dir (logs, configs) and print its path
# Every process it starts is stopped on exit (trap), including on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

LOAD_SECONDS=${LOAD_SECONDS:-10}
if [[ -z ${LOAD_WARMUP:-} ]]; then
    if ((LOAD_SECONDS < 5)); then LOAD_WARMUP=1; else LOAD_WARMUP=2; fi
fi
LOAD_CONNECTIONS=${LOAD_CONNECTIONS:-32}
LOAD_MIXES=${LOAD_MIXES:-json sse}
LOAD_GAP_MS=${LOAD_GAP_MS:-1}
LOAD_TARGETS=${LOAD_TARGETS:-direct nginx gw-plain gw-policy}
USER_KEY=sk-user-1
BACKEND_KEY=load-bench-backend-key
ADMIN_TOKEN=load-bench-admin

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'load: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- cleanup

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gw-load.XXXXXX")
chmod 755 "$TMP" # nginx workers (user nobody when started by root) read inside it
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ ${LOAD_KEEP:-0} == 1 ]]; then
        printf 'load: kept %s\n' "$TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- 1. build and tools

SUDO=()
if [[ $(id -u) != 0 ]]; then SUDO=(sudo); fi
need_tool() { # need_tool COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    step "installing $2 (apt-get)"
    if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2; then
        "${SUDO[@]}" apt-get update -q >&2
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2
    fi
    command -v "$1" >/dev/null 2>&1 || die "$1 still missing after installing $2"
}
need_tool wrk wrk
# nginx lives in /usr/sbin, which may not be on a non-root PATH.
PATH=$PATH:/usr/sbin:/sbin
need_tool nginx nginx
need_tool curl curl

if [[ -n ${LOAD_GW:-} ]]; then
    GW=$LOAD_GW
else
    step "cargo build --release -p gw-runtime --bin gw"
    cargo build --release -p gw-runtime --bin gw >&2
    TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    GW=${TARGET_DIR:-$ROOT/target}/release/gw
fi
[[ -x $GW ]] || die "no gw binary at $GW"

# ---------------------------------------------------------------- helpers

# A port nobody listens on now (bind to port 0 and ask; fall back to probing).
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return
    fi
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

# wait_http NAME URL LOG: poll until URL answers at all (any status), or fail with the log.
wait_http() {
    local i
    for ((i = 0; i < 200; i++)); do
        if curl -s -o /dev/null --max-time 1 "$2"; then return 0; fi
        sleep 0.05
    done
    cat "$3" >&2 || true
    die "$1 did not come up at $2"
}

# ---------------------------------------------------------------- 2. the mock upstream

MOCK_PORT=$(free_port)
step "gw mock on 127.0.0.1:$MOCK_PORT"
"$GW" mock --listen "127.0.0.1:$MOCK_PORT" --delay-ms 0 --chunk-delay-ms 0 --record=false \
    >"$TMP/mock.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
wait_http mock "http://127.0.0.1:$MOCK_PORT/health" "$TMP/mock.log"

# ---------------------------------------------------------------- 3. gw: seed 001 + a budget, and plain

# RSS in KiB summed over processes: rss_kb FIELD PID... (FIELD VmRSS now, VmHWM the peak)
rss_kb() {
    local field=$1 pid sum=0 v
    shift
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null)
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}
declare -A RSS_IDLE RSS_AFTER RSS_PEAK

GW_PORT=$(free_port)
ADMIN_PORT=$(free_port)
cp -r "$ROOT/examples/unified-proxy" "$TMP/policy"
POLICY=$TMP/policy/gateway.gwp
sed -i \
    -e "s#\"http://127.0.0.1:9102\"#\"http://127.0.0.1:$MOCK_PORT\"#" \
    -e 's#rate 20/s burst 40; concurrent 10#rate 1000000/s burst 1000000; concurrent 100000#' \
    -e 's#^    auth    users via header "x-api-key", bearer#&\n    limit   tokens 1000000000/min per key#' \
    "$POLICY"
step "policy edits (seed 001 otherwise unchanged)"
diff "$ROOT/examples/unified-proxy/gateway.gwp" "$POLICY" >&2 || true
grep -q "127.0.0.1:$MOCK_PORT" "$POLICY" || die "could not point the policy at the mock"
[[ $(grep -c 'concurrent 100000' "$POLICY") == 2 ]] || die "could not raise the tenant limits"
grep -q 'limit   tokens 1000000000/min per key' "$POLICY" || die "could not add the token budget"

step "gw-policy: gw serve on 127.0.0.1:$GW_PORT (admin 127.0.0.1:$ADMIN_PORT)"
BACKEND_API_KEY=$BACKEND_KEY GW_ADMIN_TOKEN=$ADMIN_TOKEN GW_LOG=${GW_LOG:-warn} \
    "$GW" serve "$POLICY" --listen "127.0.0.1:$GW_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
    >"$TMP/gw.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_http gw "http://127.0.0.1:$GW_PORT/health" "$TMP/gw.log"

PLAIN_PORT=$(free_port)
mkdir -p "$TMP/plain"
printf '%s\n' \
    "gateway { listen \"127.0.0.1:$PLAIN_PORT\" }" \
    "upstream backend { target \"http://127.0.0.1:$MOCK_PORT\" }" \
    'route chat {' \
    '    when POST "/miniai/v2/chat/completions"' \
    '    auth none' \
    '    to   backend' \
    '}' >"$TMP/plain/gateway.gwp"
step "gw-plain: gw serve on 127.0.0.1:$PLAIN_PORT"
GW_LOG=${GW_LOG:-warn} "$GW" serve "$TMP/plain/gateway.gwp" >"$TMP/plain/gw.log" 2>&1 &
PLAIN_PID=$!
PIDS+=("$PLAIN_PID")
# No route answers GET /: any answer at all (a 404) says it listens.
wait_http gw-plain "http://127.0.0.1:$PLAIN_PORT/" "$TMP/plain/gw.log"

# ---------------------------------------------------------------- 4. nginx

NGINX_PORT=$(free_port)
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 2;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 1000000;
    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
step "nginx on 127.0.0.1:$NGINX_PORT ($(nginx -v 2>&1 | sed 's/.*: //'))"
nginx -p "$TMP/nginx/" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" >"$TMP/nginx/stderr.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_http nginx "http://127.0.0.1:$NGINX_PORT/health" "$TMP/nginx/stderr.log"

# ---------------------------------------------------------------- sanity checks

BACKEND_PATH=/miniai/v2/chat/completions
declare -A URL=(
    [direct]="http://127.0.0.1:$MOCK_PORT$BACKEND_PATH"
    [nginx]="http://127.0.0.1:$NGINX_PORT$BACKEND_PATH"
    [gw-plain]="http://127.0.0.1:$PLAIN_PORT$BACKEND_PATH"
    [gw-policy]="http://127.0.0.1:$GW_PORT/proxy$BACKEND_PATH"
)
TARGETS=(direct)
for t in $LOAD_TARGETS; do
    [[ -n ${URL[$t]:-} ]] || die "unknown target $t (direct nginx gw-plain gw-policy)"
    [[ $t == direct ]] || TARGETS+=("$t")
done
# The processes whose CPU time and memory are the target's cost: nginx is its master and workers.
NGINX_PIDS=("$NGINX_PID" $(cat "/proc/$NGINX_PID/task/$NGINX_PID/children" 2>/dev/null || pgrep -P "$NGINX_PID"))
declare -A OWN_PIDS=([direct]="$MOCK_PID" [gw-policy]="$GW_PID" [gw-plain]="$PLAIN_PID" [nginx]="${NGINX_PIDS[*]}")
for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2086 # a list of pids
    RSS_IDLE[$t]=$(rss_kb VmRSS ${OWN_PIDS[$t]})
done
BODY_json='{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"Hello"}]}'
BODY_sse='{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"Hello"}],"stream":true}'

post() { # post URL BODY [CURL ARGS...]; X-API-Key is $KEY (default: the user key)
    local url=$1 body=$2
    shift 2
    curl -sS --max-time 5 -X POST "$url" -H "Content-Type: application/json" -H "X-API-Key: ${KEY:-$USER_KEY}" \
        -d "$body" "$@"
}

step "sanity checks"
for t in "${TARGETS[@]}"; do
    out=$(post "${URL[$t]}" "$BODY_json" -w '\n%{http_code}')
    [[ ${out##*$'\n'} == 200 && $out == *'"chat.completion"'* ]] || die "$t: JSON chat call failed: $out"
    out=$(post "${URL[$t]}" "$BODY_sse" -w '\n%{http_code}')
    [[ ${out##*$'\n'} == 200 && $out == *'data: [DONE]'* ]] || die "$t: SSE chat call failed: $out"
done
# gw really runs seed 001: look at what the upstream received.
echo_json=$(post "${URL[gw-policy]}" "$BODY_json" -H "x-mock-echo: 1" -H "X-Forwarded-For: 10.9.9.9")
check_echo() {
    [[ $echo_json == *"$1"* ]] || die "gw forwarded a request without $2: $echo_json"
}
check_echo "\"path\":\"$BACKEND_PATH\"" 'the /proxy prefix rewritten away'
check_echo "[\"authorization\",\"Bearer $BACKEND_KEY\"]" 'the backend key injected'
check_echo '["user-agent","M-FastGate (gw)"]' 'the seed user-agent'
[[ $echo_json != *"$USER_KEY"* ]] || die "gw forwarded the user key: $echo_json"
[[ $echo_json != *"10.9.9.9"* ]] || die "gw forwarded x-forwarded-for: $echo_json"
out=$(KEY=sk-wrong post "${URL[gw-policy]}" "$BODY_json" -o /dev/null -w '%{http_code}')
[[ $out == 401 ]] || die "gw accepted a wrong key (status $out)"
echo "ok: auth, header strip, key injection, rewrite and user-agent as seed 001 says" >&2

# ---------------------------------------------------------------- 5. measure

# The wrk script: request from the environment, exact numbers printed when done.
cat >"$TMP/bench.lua" <<'EOF'
wrk.method = "POST"
wrk.body = os.getenv("LOAD_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("LOAD_USER_KEY")

-- Unloaded runs pause between requests (wrk starts the latency clock after the pause).
local gap = tonumber(os.getenv("LOAD_GAP_MS") or "0")
if gap > 0 then
    delay = function() return gap end
end

done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d mean_us=%.1f non2xx=%d sockerr=%d\n",
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        latency.mean, e.status, e.connect + e.read + e.write + e.timeout))
end
EOF

# run_wrk TARGET MIX CONNECTIONS SECONDS [GAP_MS] -> the RESULT line's fields
run_wrk() {
    local body_var=BODY_$2 out
    out=$(LOAD_BODY=${!body_var} LOAD_USER_KEY=$USER_KEY LOAD_GAP_MS=${5:-0} \
        wrk -t1 -c"$3" -d"$4"s --timeout 5s -s "$TMP/bench.lua" "${URL[$1]}" 2>&1) ||
        die "wrk failed against $1: $out"
    local line
    line=$(grep '^RESULT ' <<<"$out") || die "no result from wrk against $1: $out"
    echo "${line#RESULT }"
}

check_result() { # check_result TARGET RESULT: no error answers, no socket errors
    [[ $(field non2xx "$2") == 0 && $(field sockerr "$2") == 0 ]] ||
        die "$1 answered errors under load ($2); LOAD_KEEP=1 keeps the logs"
}

field() { # field NAME "k=v k=v ..."
    local kv
    for kv in $2; do
        if [[ ${kv%%=*} == "$1" ]]; then
            echo "${kv#*=}"
            return
        fi
    done
}

# CPU time (clock ticks, user + system) of processes and their children threads.
TICK=$(getconf CLK_TCK)
cpu_ticks() {
    local pid sum=0
    for pid in "$@"; do
        [[ -r /proc/$pid/stat ]] || continue
        # Fields 14 and 15 after the ")" closing the command name.
        sum=$((sum + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$sum"
}
# µs of CPU per request from a tick delta and a request count.
per_req() { awk -v t="$1" -v n="$2" -v hz="$TICK" 'BEGIN { printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0) }'; }

declare -A RPS P50 P99 U50 U99 CPU MCPU
for mix in $LOAD_MIXES; do
    [[ $mix == json || $mix == sse ]] || die "unknown mix $mix (json, sse)"
    for t in "${TARGETS[@]}"; do
        step "$mix -> $t: warm-up ${LOAD_WARMUP}s, loaded (c=$LOAD_CONNECTIONS) ${LOAD_SECONDS}s, unloaded (c=1, ${LOAD_GAP_MS} ms apart) ${LOAD_SECONDS}s"
        run_wrk "$t" "$mix" "$LOAD_CONNECTIONS" "$LOAD_WARMUP" >/dev/null
        # shellcheck disable=SC2086 # a list of pids
        own0=$(cpu_ticks ${OWN_PIDS[$t]})
        mock0=$(cpu_ticks "$MOCK_PID")
        r=$(run_wrk "$t" "$mix" "$LOAD_CONNECTIONS" "$LOAD_SECONDS")
        # shellcheck disable=SC2086
        own1=$(cpu_ticks ${OWN_PIDS[$t]})
        mock1=$(cpu_ticks "$MOCK_PID")
        echo "   loaded:   $r" >&2
        check_result "$t" "$r"
        n=$(field requests "$r")
        RPS[$mix.$t]=$(awk -v n="$n" -v d="$(field duration_us "$r")" 'BEGIN { printf "%.0f", n * 1e6 / d }')
        P50[$mix.$t]=$(field p50_us "$r") P99[$mix.$t]=$(field p99_us "$r")
        CPU[$mix.$t]=$(per_req $((own1 - own0)) "$n") MCPU[$mix.$t]=$(per_req $((mock1 - mock0)) "$n")
        r=$(run_wrk "$t" "$mix" 1 "$LOAD_SECONDS" "$LOAD_GAP_MS")
        echo "   unloaded: $r" >&2
        check_result "$t" "$r"
        U50[$mix.$t]=$(field p50_us "$r") U99[$mix.$t]=$(field p99_us "$r")
    done
done

# ---------------------------------------------------------------- 6. report

for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2086 # a list of pids
    RSS_AFTER[$t]=$(rss_kb VmRSS ${OWN_PIDS[$t]})
    # shellcheck disable=SC2086
    RSS_PEAK[$t]=$(rss_kb VmHWM ${OWN_PIDS[$t]})
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
added() { local d=$(($1 - $2)); if ((d >= 0)); then echo "+$d"; else echo "$d"; fi; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
verdict() { awk -v v="$1" -v aim="$2" -v op="$3" 'BEGIN { ok = (op == "le" ? v <= aim : v >= aim); print (ok ? "meets" : "MISSES") }'; }
has() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }
C=$LOAD_CONNECTIONS

echo
echo "gw load benchmark: loopback, $(nproc) cores, wrk -t1, ${LOAD_SECONDS}s per measurement"
echo "gw $("$GW" version | sed 's/^gw //'), $(nginx -v 2>&1 | sed 's/.*: //') (worker_processes 2), gw mock upstream (no delay)"
echo "loaded: c=$C, as fast as possible; unloaded: c=1, one request every ${LOAD_GAP_MS} ms; latencies from wrk"
echo "(coordinated-omission corrected); cpu/req: CPU time of the target's processes (and of the mock) per request"
for mix in $LOAD_MIXES; do
    echo
    case $mix in
        json) echo "mix json: POST chat completion, JSON answer" ;;
        sse) echo "mix sse: POST chat completion, \"stream\": true (8 SSE chunks)" ;;
    esac
    printf '%-10s|%9s %9s %9s %9s %9s |%9s %9s\n' "" "loaded" "" "" "cpu/req" "cpu/req" "unloaded" ""
    printf '%-10s|%9s %9s %9s %9s %9s |%9s %9s\n' target "req/s" "p50 µs" "p99 µs" "own µs" "mock µs" "p50 µs" "p99 µs"
    for t in "${TARGETS[@]}"; do
        own=${CPU[$mix.$t]}
        [[ $t == direct ]] && own=-
        printf '%-10s|%9s %9s %9s %9s %9s |%9s %9s\n' "$t" "${RPS[$mix.$t]}" "${P50[$mix.$t]}" "${P99[$mix.$t]}" \
            "$own" "${MCPU[$mix.$t]}" "${U50[$mix.$t]}" "${U99[$mix.$t]}"
    done
done

# The table the README carries: ratios against direct (throughput), against gw-plain (CPU),
# added latency over direct with one connection, and memory.
describe() {
    case $1 in
        direct) echo "direct to the mock upstream" ;;
        nginx) echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), plain proxy" ;;
        gw-plain) echo "gw, plain proxy" ;;
        gw-policy) echo "gw, whole policy (key auth, body guard, rate + concurrency limits, token budget, audit, metrics)" ;;
    esac
}
echo
echo "Ratios (markdown; LOAD_SECONDS=${LOAD_SECONDS}, c=$C loaded, c=1 unloaded):"
echo
header="| target |"
rule="|---|"
for mix in $LOAD_MIXES; do
    header+=" $mix req/s × direct | $mix CPU/req | $mix added p50 / p99, 1 conn |"
    rule+="---:|---:|---:|"
done
header+=" RSS idle / peak / after |"
rule+="---:|"
echo "$header"
echo "$rule"
for t in "${TARGETS[@]}"; do
    line="| $(describe "$t") |"
    for mix in $LOAD_MIXES; do
        if [[ $t == direct ]]; then
            line+=" 1.00 (${RPS[$mix.direct]}/s) | ${MCPU[$mix.direct]} µs (mock) | ${U50[$mix.direct]} / ${U99[$mix.direct]} µs (total) |"
            continue
        fi
        cpu="${CPU[$mix.$t]} µs"
        if has gw-plain && [[ $t != gw-plain ]]; then
            cpu+=" ($(ratio "${CPU[$mix.$t]}" "${CPU[$mix.gw-plain]}")× gw-plain)"
        fi
        line+=" $(ratio "${RPS[$mix.$t]}" "${RPS[$mix.direct]}") | $cpu |"
        line+=" $(added "${U50[$mix.$t]}" "${U50[$mix.direct]}") / $(added "${U99[$mix.$t]}" "${U99[$mix.direct]}") µs |"
    done
    line+=" $(mib "${RSS_IDLE[$t]}") / $(mib "${RSS_PEAK[$t]}") / $(mib "${RSS_AFTER[$t]}") MiB |"
    echo "$line"
done

echo
echo "Aims of issue 15 (reported, not enforced):"
row() { printf '  %-52s %16s   %-16s %s\n' "$@"; }
for mix in $LOAD_MIXES; do
    has gw-policy || break
    echo " $mix:"
    pol=$(ratio "${RPS[$mix.gw-policy]}" "${RPS[$mix.direct]}")
    row "gw-policy throughput / direct" "$pol" "aim >= 0.75" "$(verdict "$pol" 0.75 ge)"
    if has nginx; then
        vs=$(ratio "${RPS[$mix.gw-policy]}" "${RPS[$mix.nginx]}")
        row "gw-policy throughput / nginx" "$vs" "aim >= 1.00" "$(verdict "$vs" 1 ge)"
    fi
    if has gw-plain; then
        plain=$(ratio "${RPS[$mix.gw-plain]}" "${RPS[$mix.direct]}")
        row "gw-plain throughput / direct" "$plain" "aim > gw-policy" "$(verdict "$plain" "$pol" ge)"
        cpu=$(ratio "${CPU[$mix.gw-policy]}" "${CPU[$mix.gw-plain]}")
        row "gw-policy CPU per request / gw-plain's" "$cpu" "aim <= 1.25" "$(verdict "$cpu" 1.25 le)"
    fi
    o50=$((${U50[$mix.gw-policy]} - ${U50[$mix.direct]}))
    o99=$((${U99[$mix.gw-policy]} - ${U99[$mix.direct]}))
    row "gw-policy added latency p50, 1 connection" "$o50 µs" "aim <= 30 µs" "$(verdict "$o50" 30 le)"
    row "gw-policy added latency p99, 1 connection" "$o99 µs" "aim <= 100 µs" "$(verdict "$o99" 100 le)"
    if ((${U99[$mix.direct]} > 10 * ${U50[$mix.direct]})); then
        echo "  (direct's own unloaded p99 is over 10× its p50: other load disturbed it, so every added p99 here is noise)"
    fi
    if has nginx; then
        row "nginx added latency p50 / p99, 1 connection" \
            "$((${U50[$mix.nginx]} - ${U50[$mix.direct]})) / $((${U99[$mix.nginx]} - ${U99[$mix.direct]})) µs" "" ""
    fi
done
if has gw-policy; then
    idle=$(mib "${RSS_IDLE[gw-policy]}")
    row "gw-policy RSS idle (token budget on)" "$idle MiB" "aim <= 32 MiB" "$(verdict "$idle" 32 le)"
fi
audit_lines=$(cat "$TMP"/policy/logs/audit.jsonl* 2>/dev/null | wc -l)
audit_dropped=$(curl -s --max-time 5 -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:$ADMIN_PORT/metrics" |
    awk '/^gw_audit_dropped_total/ { print $2 }')
echo
echo "gw-policy's audit log (part of the policy measured): $audit_lines lines in the files kept," \
    "${audit_dropped:-?} records dropped (gw_audit_dropped_total)"
echo
echo "Absolute figures move with other load on this machine; compare ratios within one run and"
echo "rerun before concluding. cpu/req is the figure least moved by other load."
