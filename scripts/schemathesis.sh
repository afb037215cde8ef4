#!/usr/bin/env bash
# Fuzzes a running mock-chart-img against the Chart-IMG API's OpenAPI document (chart-img-spec/openapi.json) with
# schemathesis: no 5xx, every status, content type and JSON body as the document says.
#   scripts/schemathesis.sh [MOCK_BINARY]     (default target/debug/mock-chart-img, built by `cargo test`)
# Installs schemathesis (PyPI, pinned) into .tools/schemathesis on first use. Extra settings from the environment:
# ST_MAX_EXAMPLES (default 100 per operation and phase), ST_SEED (default 1, so a failure reproduces).
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
venv=.tools/schemathesis
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$version"; then
  echo "installing schemathesis $version into $venv"
  if ! { python3 -m venv "$venv" && "$venv/bin/pip" install -q "schemathesis==$version"; }; then
    echo "error: could not install schemathesis $version from PyPI into $venv (needs python3 with venv)" >&2
    exit 1
  fi
fi

mock=${1:-target/debug/mock-chart-img}
[ -x "$mock" ] || { echo "error: $mock is not built (cargo build -p mock-chart-img)" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$mock" --config mock-chart-img/examples/schemathesis.yaml --listen "127.0.0.1:$port" --log-summary-secs 0 >"$log" 2>&1 &
mock_pid=$!
trap 'kill "$mock_pid" 2>/dev/null || true; wait "$mock_pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/__admin/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/__admin/health" >/dev/null || { cat "$log" >&2; echo "error: mock-chart-img did not start" >&2; exit 1; }
# The document the mock serves is the committed one (chart-img-spec's test checks the file against the generator).
cmp -s <(curl -fsS "http://127.0.0.1:$port/__admin/chart-img-openapi.json") chart-img-spec/openapi.json \
  || { echo "error: the mock serves another document than chart-img-spec/openapi.json" >&2; exit 1; }

started=$(date +%s)
"$venv/bin/st" run chart-img-spec/openapi.json --url "http://127.0.0.1:$port" \
  -H "x-api-key: schemathesis-key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "${ST_MAX_EXAMPLES:-100}" --seed "${ST_SEED:-1}" --no-color
echo "schemathesis took $(( $(date +%s) - started )) s"
