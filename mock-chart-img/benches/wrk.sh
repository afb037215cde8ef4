#!/usr/bin/env bash
# Load bench with an external load generator: wrk against a bare axum server answering the same PNG bytes (the
# ceiling), the mock with its default settings, and the mock with RUST_LOG=warn, interleaved round by round on
# loopback. Prints, per round, req/s and CPU time per request of each server and the ratios to bare axum; then the
# medians over the rounds.
#
#   mock-chart-img/benches/wrk.sh                             # ROUNDS=5 CONNS=50 SECS=10 THREADS=2 QUIET=1 READ_BODY=0
#   BENCH_NO_BUILD=1 ROUNDS=2 mock-chart-img/benches/wrk.sh   # reuse target/release binaries
#
# QUIET=0 leaves out the RUST_LOG=warn mock; READ_BODY=1 adds bare axum reading the request body (`BARE_BODY=1`), which
# the ceiling does not and the mock must: what reading a body costs by itself. BASELINE=<path of another
# mock-chart-img binary> adds that binary with default settings, for a before/after in the same interleaved run.
#
# "Default settings" means what a user gets: no RUST_LOG (info), the default journal capacity (1000), the default
# traffic summary, logs written to a file (as a platform collects stderr), and a key whose rate limiter and daily
# counter run on every request (a custom plan too large to throttle the bench).
#
# Why interleaved rounds and CPU per request: on a shared machine req/s moves with whatever else runs (wrk shares the
# cores with the server it loads). All three servers run for the whole bench and are loaded in turn (bare, mock,
# quiet, bare, mock, quiet, …), so slow drifts hit each of them alike and each round's ratio compares neighbours in
# time; the median ratio ignores the odd disturbed round. CPU µs per request — the server process's utime+stime
# (/proc/<pid>/stat, all threads) over the measured run, divided by the requests wrk counted — is what the server
# itself spends on a request, and moves far less with the neighbours' load than req/s does.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-50}
SECS=${SECS:-10}
THREADS=${THREADS:-2}
QUIET=${QUIET:-1}
READ_BODY=${READ_BODY:-0}
BASELINE=${BASELINE:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v wrk >/dev/null; then
    echo "installing wrk (Debian package)" >&2
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get install -y wrk >/dev/null 2>&1 || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y wrk >/dev/null; }
fi
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build --release --locked -p mock-chart-img --bin mock-chart-img --example bare_axum)
fi
MOCK=$TARGET/release/mock-chart-img
BARE=$TARGET/release/examples/bare_axum
TICK=$(getconf CLK_TCK)

BODY='{"symbol":"BINANCE:BTCUSDT","interval":"4h"}'
cat >"$WORK/mock.yaml" <<YAML
keys:
  - key: bench-key
    account: bench
    plan: { rate_per_sec: 1000000000, burst: 1000000000, daily_limit: 4000000000, max_width: 2048, max_height: 1920, max_params: 50 }
YAML
cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = "bench-key"
LUA

# Starts the mock binary $1 with extra environment "${@:2}"; sets ADDR and PID.
start_mock() {
    local log=$WORK/mock-$RANDOM.log bin=$1
    shift
    env -u RUST_LOG "$@" "$bin" --config "$WORK/mock.yaml" --listen 127.0.0.1:0 2>"$log" &
    PID=$!
    PIDS+=("$PID")
    # The port comes from the kernel; with RUST_LOG=warn the mock does not log it, so ask the socket table.
    for _ in $(seq 100); do
        ADDR=$(ss -Hltnp 2>/dev/null | grep "pid=$PID," | awk '{print $4}' | head -1) || true
        [ -n "$ADDR" ] && return 0
        sleep 0.1
    done
    echo "the mock did not start: $(cat "$log")" >&2
    exit 1
}

# Starts bare axum on the PNG with extra environment "$@"; sets ADDR and PID.
start_bare() {
    local out=$WORK/bare-$RANDOM.out
    env "$@" "$BARE" "$WORK/chart.png" >"$out" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 100); do
        ADDR=$(sed -n 's/^listening on //p' "$out")
        [ -n "$ADDR" ] && return 0
        sleep 0.1
    done
    echo "bare_axum did not start" >&2
    exit 1
}

# utime+stime of a process (all its threads), in clock ticks.
cpu_ticks() {
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# Loads server $2 (pid) at $1 (address) with wrk; prints "req/s cpu_us_per_request", the latency line to stderr.
load() {
    local url="http://$1/v2/tradingview/advanced-chart" pid=$2
    wrk -t"$THREADS" -c"$CONNS" -d2s -s "$WORK/post.lua" "$url" >/dev/null # warm-up: cache, memo, connections
    local out before after
    before=$(cpu_ticks "$pid")
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency -s "$WORK/post.lua" "$url")
    after=$(cpu_ticks "$pid")
    if grep -q "Non-2xx" <<<"$out"; then
        echo "non-2xx answers: $out" >&2
        exit 1
    fi
    echo "    $(grep -E '^ +50%|^ +99%' <<<"$out" | tr -s ' ' | tr '\n' ' ')" >&2
    awk -v b="$before" -v a="$after" -v t="$TICK" '
        / requests in / {n = $1}
        /^Requests\/sec/ {r = $2}
        END {printf "%s %.2f\n", r, (a - b) / t * 1e6 / n}' <<<"$out"
}

median() {
    sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# The PNG all servers answer with: the mock's own answer to the bench body.
NAMES=() ADDRS=() SPIDS=()
add() { NAMES+=("$1"); ADDRS+=("$ADDR"); SPIDS+=("$PID"); }
start_mock "$MOCK"
curl -sf -o "$WORK/chart.png" -H 'content-type: application/json' -H 'x-api-key: bench-key' -d "$BODY" \
    "http://$ADDR/v2/tradingview/advanced-chart"
MOCK_ADDR=$ADDR MOCK_PID=$PID
start_bare
add "bare axum"
ADDR=$MOCK_ADDR PID=$MOCK_PID add "mock default"
if [ "$QUIET" = 1 ]; then
    start_mock "$MOCK" RUST_LOG=warn
    add "mock RUST_LOG=warn"
fi
if [ "$READ_BODY" = 1 ]; then
    start_bare BARE_BODY=1
    add "bare axum reading the body"
fi
if [ -n "$BASELINE" ]; then
    start_mock "$BASELINE"
    add "baseline mock default"
fi

echo "wrk -t$THREADS -c$CONNS -d${SECS}s, POST of $(wc -c <"$WORK/chart.png") PNG bytes, $(nproc) cores, loopback," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%Y-%m-%d %H:%M UTC')"
: >"$WORK/rounds"
for round in $(seq "$ROUNDS"); do
    line=() row=()
    for i in "${!NAMES[@]}"; do
        echo "  round $round, ${NAMES[$i]}:" >&2
        read -r rps cpu < <(load "${ADDRS[$i]}" "${SPIDS[$i]}")
        [ "$i" = 0 ] && bare=$rps
        line+=("$(awk -v n="${NAMES[$i]}" -v r="$rps" -v c="$cpu" -v b="$bare" -v i="$i" 'BEGIN {
            printf "%s %.0f req/s %.2f us/req", n, r, c; if (i > 0) printf " (%.2fx)", r / b }')")
        row+=("$rps" "$cpu")
    done
    (IFS='|'; echo "round $round: ${line[*]}" | sed 's/|/ | /g')
    echo "${row[*]}" >>"$WORK/rounds"
done
# Medians over the rounds: of each server's req/s ratio to bare axum in the same round, and of its CPU per request.
summary=()
for i in "${!NAMES[@]}"; do
    cpu=$(awk -v c=$((2 * i + 2)) '{print $c}' "$WORK/rounds" | median)
    if [ "$i" = 0 ]; then
        summary+=("$(printf '%s CPU %.2f us/req' "${NAMES[$i]}" "$cpu")")
    else
        ratio=$(awk -v c=$((2 * i + 1)) '{print $c / $1}' "$WORK/rounds" | median)
        cpu_ratio=$(awk -v c=$((2 * i + 2)) '{print $2 / $c}' "$WORK/rounds" | median)
        summary+=("$(printf '%s %.2fx, CPU %.2f us/req (bare/it %.2fx)' "${NAMES[$i]}" "$ratio" "$cpu" "$cpu_ratio")")
    fi
done
(IFS='|'; echo "median of $ROUNDS rounds: ${summary[*]}" | sed 's/|/ | /g')
