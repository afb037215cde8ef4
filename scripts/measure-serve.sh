#!/usr/bin/env bash
# Measures `worker-chart-export serve`: time from exec to the first 2xx answer of GET /health, and idle RSS.
#
#   scripts/emulators.sh start && source .tools/emulators.env
#   cargo build -p worker --release
#   scripts/measure-serve.sh [runs]          # default 5 runs; prints each run and the median
#
# Uses the release binary in target/release, the running emulators (FIRESTORE_EMULATOR_HOST, STORAGE_EMULATOR_HOST
# from .tools/emulators.env when not set), curl in a tight loop and VmRSS from /proc/<pid>/status after 1 s idle.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${WORKER_BIN:-$ROOT/target/release/worker-chart-export}"
RUNS="${1:-5}"
[[ -x "$BIN" ]] || { echo "measure-serve.sh: $BIN not found; run: cargo build -p worker --release" >&2; exit 1; }
if [[ -z "${FIRESTORE_EMULATOR_HOST:-}" && -f "$ROOT/.tools/emulators.env" ]]; then
  # shellcheck disable=SC1091
  source "$ROOT/.tools/emulators.env"
fi
[[ -n "${FIRESTORE_EMULATOR_HOST:-}" && -n "${STORAGE_EMULATOR_HOST:-}" ]] \
  || { echo "measure-serve.sh: start the emulators first (scripts/emulators.sh start)" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ns() { date +%s%N; }

startup=(); rss=()
for i in $(seq 1 "$RUNS"); do
  port="$(free_port)"
  t0="$(now_ns)"
  PORT="$port" GOOGLE_CLOUD_PROJECT=measure ARTIFACTS_BUCKET=measure \
    CHART_IMG_ACCOUNTS_JSON='[{"id":"acc-1","apiKey":"measure-key","dailyLimit":50}]' \
    RUST_LOG=warn "$BIN" serve >/dev/null 2>&1 &
  pid=$!
  ok=""
  for _ in $(seq 1 5000); do
    if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/health" 2>/dev/null; then ok=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
  done
  t1="$(now_ns)"
  if [[ -z "$ok" ]]; then kill "$pid" 2>/dev/null || true; echo "run $i: serve did not answer /health" >&2; exit 1; fi
  sleep 1
  kb="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  ms=$(( (t1 - t0) / 1000000 ))
  startup+=("$ms"); rss+=("$kb")
  echo "run $i: first 2xx /health after ${ms} ms, idle VmRSS ${kb} kB"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "median: start-up $(median "${startup[@]}") ms, idle RSS $(( $(median "${rss[@]}") / 1024 )) MiB ($(median "${rss[@]}") kB)"
