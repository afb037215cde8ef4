#!/usr/bin/env bash
# Load bench with an external load generator: wrk against the mock (default settings, then RUST_LOG=warn) and
# against a bare axum server answering the same PNG bytes, in one run, on loopback only. Prints req/s and the ratios.
#
#   mock-chart-img/benches/wrk.sh                 # ROUNDS=1 CONNS=50 SECS=10 THREADS=2
#   BENCH_NO_BUILD=1 mock-chart-img/benches/wrk.sh  # reuse target/release binaries
#
# "Default settings" means what a user gets: no RUST_LOG (info), the default journal capacity (1000), the default
# traffic summary, logs written to a file (as a platform collects stderr), and a key whose rate limiter and daily
# counter run on every request (a custom plan too large to throttle the bench).
set -euo pipefail

ROUNDS=${ROUNDS:-1}
CONNS=${CONNS:-50}
SECS=${SECS:-10}
THREADS=${THREADS:-2}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
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

# Starts the mock with extra environment "$@"; sets ADDR.
start_mock() {
    local log=$WORK/mock-$RANDOM.log
    env -u RUST_LOG "$@" "$MOCK" --config "$WORK/mock.yaml" --listen 127.0.0.1:0 2>"$log" &
    local pid=$!
    PIDS+=("$pid")
    # The port comes from the kernel; with RUST_LOG=warn the mock does not log it, so ask the socket table.
    for _ in $(seq 100); do
        ADDR=$(ss -Hltnp 2>/dev/null | grep "pid=$pid," | awk '{print $4}' | head -1) || true
        [ -n "$ADDR" ] && return 0
        sleep 0.1
    done
    echo "the mock did not start: $(cat "$log")" >&2
    exit 1
}

start_bare() {
    "$BARE" "$WORK/chart.png" >"$WORK/bare.out" &
    PIDS+=($!)
    for _ in $(seq 100); do
        ADDR=$(sed -n 's/^listening on //p' "$WORK/bare.out")
        [ -n "$ADDR" ] && return 0
        sleep 0.1
    done
    echo "bare_axum did not start" >&2
    exit 1
}

stop_last() {
    kill "${PIDS[-1]}" 2>/dev/null || true
    wait "${PIDS[-1]}" 2>/dev/null || true
    unset 'PIDS[-1]'
}

# Runs wrk against ADDR; prints req/s, and the latency line to stderr.
load() {
    local url="http://$ADDR/v2/tradingview/advanced-chart"
    wrk -t"$THREADS" -c"$CONNS" -d2s -s "$WORK/post.lua" "$url" >/dev/null # warm-up: cache, memo, connections
    local out
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency -s "$WORK/post.lua" "$url")
    if grep -q "Non-2xx" <<<"$out"; then
        echo "non-2xx answers: $out" >&2
        exit 1
    fi
    echo "    $(grep -E '^ +50%|^ +99%' <<<"$out" | tr -s ' ' | tr '\n' ' ')" >&2
    awk '/^Requests\/sec/ {print $2}' <<<"$out"
}

# The PNG both servers answer with: the mock's own answer to the bench body.
start_mock
curl -sf -o "$WORK/chart.png" -H 'content-type: application/json' -H 'x-api-key: bench-key' -d "$BODY" \
    "http://$ADDR/v2/tradingview/advanced-chart"
stop_last

echo "wrk -t$THREADS -c$CONNS -d${SECS}s, POST of $(wc -c <"$WORK/chart.png") PNG bytes, $(nproc) cores, loopback"
for round in $(seq "$ROUNDS"); do
    start_bare
    echo "  bare axum:" >&2
    bare=$(load)
    stop_last
    start_mock
    echo "  mock default:" >&2
    mock=$(load)
    stop_last
    start_mock RUST_LOG=warn
    echo "  mock RUST_LOG=warn:" >&2
    quiet=$(load)
    stop_last
    awk -v r="$round" -v b="$bare" -v m="$mock" -v q="$quiet" 'BEGIN {
        printf "round %s: bare axum %.0f req/s | mock default %.0f req/s (%.2fx) | mock RUST_LOG=warn %.0f req/s (%.2fx)\n",
            r, b, m, m / b, q, q / b }'
done
