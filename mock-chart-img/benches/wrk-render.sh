#!/usr/bin/env bash
# Render bench with an external load generator: every request asks for a chart the cache does not hold (1,200
# distinct 800x600 charts cycled, the render cache keeps 128), so every request renders. Per server and round: a
# fresh process, its idle RSS, then wrk -c$CONNS for $SECS s while its RSS is sampled every 100 ms, its peak RSS
# (VmHWM: the kernel's high-water mark, so nothing between samples is missed), the renders per second, its RSS
# 1 s and $SETTLE s after the load (the journal's records and bodies and the render cache still held, as budgeted),
# and 2 s after `POST /__admin/reset` empties the journal (what the process holds beyond its kept data).
#
#   mock-chart-img/benches/wrk-render.sh                       # ROUNDS=3 CONNS=50 SECS=10 THREADS=2 SETTLE=5
#   BENCH_NO_BUILD=1 BASELINE=/tmp/mock-before mock-chart-img/benches/wrk-render.sh
#
# BASELINE=<another mock-chart-img binary> runs that build too, interleaved round by round (baseline, this build,
# baseline, …) so a drift of the shared machine hits both alike. EXTRA_CONFIG='render_concurrency: 4' adds lines to the
# config of every server.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-50}
SECS=${SECS:-10}
THREADS=${THREADS:-2}
SETTLE=${SETTLE:-5}
BASELINE=${BASELINE:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d)
PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v wrk >/dev/null; then
    echo "installing wrk (Debian package)" >&2
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get install -y wrk >/dev/null 2>&1 || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y wrk >/dev/null; }
fi
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build --release --locked -p mock-chart-img --bin mock-chart-img)
fi
MOCK=$TARGET/release/mock-chart-img

cat >"$WORK/mock.yaml" <<YAML
keys:
  - key: bench-key
    account: bench
    plan: { rate_per_sec: 1000000000, burst: 1000000000, daily_limit: 4000000000, max_width: 2048, max_height: 1920, max_params: 50 }
${EXTRA_CONFIG:-}
YAML
# Each wrk thread walks the 1,200 symbols from its own offset; consecutive requests never repeat a chart the LRU
# cache (128) still holds.
cat >"$WORK/render.lua" <<'LUA'
local n = 0
function setup(thread) thread:set("offset", math.random(0, 1199)) end
function request()
    n = n + 1
    local body = string.format('{"symbol":"BINANCE:R%04dUSDT","interval":"4h"}', (offset + n) % 1200)
    return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["x-api-key"] = "bench-key"}, body)
end
LUA

# utime+stime of a process (all its threads), in clock ticks.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
TICK=$(getconf CLK_TCK)
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# One round of server $1 (binary): prints "renders/s cpu idle_MiB peak_MiB after1s_MiB after_settle_MiB after_reset_MiB".
round() {
    local bin=$1 log=$WORK/mock.log
    env -u RUST_LOG "$bin" --config "$WORK/mock.yaml" --listen 127.0.0.1:0 2>"$log" &
    PID=$!
    local addr=
    for _ in $(seq 100); do
        addr=$(ss -Hltnp 2>/dev/null | grep "pid=$PID," | awk '{print $4}' | head -1) || true
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || { echo "the mock did not start: $(cat "$log")" >&2; exit 1; }
    curl -sf -o /dev/null -H 'content-type: application/json' -H 'x-api-key: bench-key' \
        -d '{"symbol":"BINANCE:BTCUSDT"}' "http://$addr/v2/tradingview/advanced-chart"
    # Idle: 4 s after that first chart, once the render threads have given back what it used (renders.rs).
    sleep 4
    local idle out peak=0 r after1 after before_cpu after_cpu
    idle=$(rss_kib "$PID")
    before_cpu=$(cpu_ticks "$PID")
    wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency --timeout 30s -s "$WORK/render.lua" \
        "http://$addr/v2/tradingview/advanced-chart" >"$WORK/wrk.out" &
    local wrk_pid=$!
    while kill -0 "$wrk_pid" 2>/dev/null; do
        r=$(rss_kib "$PID")
        [ "$r" -gt "$peak" ] && peak=$r
        sleep 0.1
    done
    wait "$wrk_pid"
    after_cpu=$(cpu_ticks "$PID")
    if grep -q "Non-2xx" "$WORK/wrk.out"; then
        echo "non-2xx answers: $(cat "$WORK/wrk.out")" >&2
        exit 1
    fi
    peak=$(hwm_kib "$PID")
    sleep 1
    after1=$(rss_kib "$PID")
    sleep "$((SETTLE - 1))"
    after=$(rss_kib "$PID")
    curl -sf -o /dev/null -X POST "http://$addr/__admin/reset"
    sleep 2
    local reset
    reset=$(rss_kib "$PID")
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
    echo "    $(grep -E '^ +50%|^ +99%' "$WORK/wrk.out" | tr -s ' ' | tr '\n' ' ')" >&2
    printf '%s %s %s %s %s %s %s\n' "$(awk '/^Requests\/sec/ {print $2}' "$WORK/wrk.out")" \
        "$(awk -v b="$before_cpu" -v a="$after_cpu" -v t="$TICK" '/ requests in / {printf "%.0f", (a - b) / t * 1e6 / $1}' "$WORK/wrk.out")" \
        "$(mib "$idle")" "$(mib "$peak")" "$(mib "$after1")" "$(mib "$after")" "$(mib "$reset")"
}

NAMES=() BINS=()
if [ -n "$BASELINE" ]; then NAMES+=("baseline"); BINS+=("$BASELINE"); fi
NAMES+=("this build"); BINS+=("$MOCK")
echo "wrk -t$THREADS -c$CONNS -d${SECS}s, 1,200 distinct 800x600 charts, $(nproc) cores, loopback," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%Y-%m-%d %H:%M UTC')"
: >"$WORK/rounds"
for r in $(seq "$ROUNDS"); do
    for i in "${!NAMES[@]}"; do
        echo "  round $r, ${NAMES[$i]}:" >&2
        read -r rps cpu idle peak after1 after reset < <(round "${BINS[$i]}")
        printf 'round %s: %-10s %7.0f renders/s, CPU %s us/render | RSS idle %5s MiB, peak %6s MiB, 1 s after %6s MiB, %s s after %6s MiB, after reset %5s MiB\n' \
            "$r" "${NAMES[$i]}" "$rps" "$cpu" "$idle" "$peak" "$after1" "$SETTLE" "$after" "$reset"
        echo "$i $rps $idle $peak $after $cpu $reset" >>"$WORK/rounds"
    done
done
for i in "${!NAMES[@]}"; do
    awk -v i="$i" -v n="${NAMES[$i]}" '$1 == i {r[++k] = $2; id[k] = $3; p[k] = $4; a[k] = $5; c[k] = $6; z[k] = $7}
        function med(v, k,   s, j, t, x) { for (j = 1; j <= k; j++) s[j] = v[j]
            for (j = 1; j <= k; j++) for (x = j + 1; x <= k; x++) if (s[x] < s[j]) { t = s[j]; s[j] = s[x]; s[x] = t }
            return (k % 2) ? s[(k + 1) / 2] : (s[k / 2] + s[k / 2 + 1]) / 2 }
        function max(v, k,   j, m) { m = v[1]; for (j = 2; j <= k; j++) if (v[j] > m) m = v[j]; return m }
        END { printf "median of %d rounds, %s: %.0f renders/s, CPU %.0f us/render, RSS idle %.1f MiB, peak %.1f MiB (max %.1f), after %.1f MiB, after reset %.1f MiB\n",
            k, n, med(r, k), med(c, k), med(id, k), med(p, k), max(p, k), med(a, k), med(z, k) }' "$WORK/rounds"
done
