#!/usr/bin/env bash
# Builds the container images of mock-chart-img and `recorder proxy`, then checks them.
#
#   scripts/images.sh --release                   # users: cargo build --release, then stage, build, check
#   scripts/images.sh --release --builder docker  # the same with docker build (no check: it runs through podman)
#   scripts/images.sh                             # CI: the binaries `cargo test` already built (target/debug)
#   scripts/images.sh --no-check                  # build only
#
# FROM scratch needs no registry: each image is its binary (stripped) plus the shared libraries `ldd` lists (libc,
# libm, libgcc_s, the loader — what distroless/cc ships), /etc/passwd with the non-root user 65532, and the CA bundle.
# They are staged in target/images/<image>/ (the build context) and built from containers/<image>.Containerfile.
#
# The check (containers/tests, pytest) runs each exported image filesystem with the image's own ENTRYPOINT, ENV and
# USER under chroot in a network namespace of its own (podman run does not work on these machines) and talks to it
# from the host: health, a chart, the admin API with and without the token, the HEALTHCHECK command's exit status,
# a Python client (requests), and the recipes in the READMEs against the images. Needs root (ip netns, chroot).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug builder=podman check=1
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release ;;
    --builder) builder="$2"; shift ;;
    --no-check) check=0 ;;
    *) echo "usage: scripts/images.sh [--release] [--builder podman|docker] [--no-check]" >&2; exit 2 ;;
  esac
  shift
done
tag=dev

need() { command -v "$1" >/dev/null || { echo "error: $1 is needed ($2)" >&2; exit 1; }; }
need "$builder" "the image builder; Debian: apt-get install podman"
need ldd "to list the shared libraries of the binaries"
need strip "binutils, to strip the binaries"

if [ "$profile" = release ]; then
  cargo build --release --locked -p mock-chart-img -p recorder
fi
for bin in mock-chart-img recorder; do
  [ -x "target/$profile/$bin" ] || {
    echo "error: target/$profile/$bin is missing: run cargo build -p mock-chart-img -p recorder (or --release)" >&2
    exit 1
  }
done

# stage IMAGE BINARY: target/images/IMAGE/{rootfs,writable}
stage() {
  local image=$1 bin=$2 dir="target/images/$1"
  rm -rf "$dir"
  mkdir -p "$dir/rootfs/usr/local/bin" "$dir/rootfs/etc/ssl/certs" "$dir/writable/data" "$dir/writable/cassettes" \
    "$dir/writable/tmp"
  strip -o "$dir/rootfs/usr/local/bin/$bin" "target/$profile/$bin"
  # Every library the loader resolves, at its own path, and the loader itself.
  ldd "target/$profile/$bin" | awk '/=> \//{print $3} /^[ \t]*\/.*ld-linux/{print $1}' | while read -r lib; do
    mkdir -p "$dir/rootfs$(dirname "$lib")"
    cp -L "$lib" "$dir/rootfs$lib"
  done
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' \
    >"$dir/rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/rootfs/etc/group"
  printf 'hosts: files dns\n' >"$dir/rootfs/etc/nsswitch.conf"
  cp -L /etc/ssl/certs/ca-certificates.crt "$dir/rootfs/etc/ssl/certs/ca-certificates.crt"
  local started=$SECONDS
  local format=()
  # podman's default (OCI) format drops HEALTHCHECK; the docker format keeps it.
  [ "$builder" = podman ] && format=(--format docker)
  # The previous build of this tag goes first, so repeated runs do not pile up dangling images.
  "$builder" rmi -i "localhost/$image:$tag" >/dev/null 2>&1 || true
  "$builder" build -q "${format[@]}" -t "localhost/$image:$tag" -f "containers/$image.Containerfile" "$dir" >/dev/null
  local size
  size=$("$builder" image inspect --format '{{.Size}}' "localhost/$image:$tag")
  echo "built localhost/$image:$tag ($profile binary): $((size / 1024 / 1024)) MiB ($size bytes) in $((SECONDS - started)) s"
}

started=$SECONDS
stage mock-chart-img mock-chart-img
stage recorder-proxy recorder

if [ "$check" = 1 ]; then
  [ "$builder" = podman ] || { echo "images built; the check runs with podman only (--builder podman)"; exit 0; }
  venv=.tools/venv
  if ! "$venv/bin/python" -c 'import pytest, requests, yaml' 2>/dev/null; then
    python3 -m venv "$venv" >/dev/null
    "$venv/bin/pip" install -q pytest requests pyyaml || {
      echo "error: could not install pytest, requests and pyyaml from PyPI into $venv" >&2
      exit 1
    }
  fi
  MOCK_IMAGE="localhost/mock-chart-img:$tag" RECORDER_IMAGE="localhost/recorder-proxy:$tag" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider containers/tests
fi
echo "images: $((SECONDS - started)) s"
