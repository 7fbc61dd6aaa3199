#!/usr/bin/env bash
# Build the Docker Compose v2 CLI from the Go module proxy, once, into the state folder.
#
#   deploy/compose/tools/build-compose.sh            → $THREADLINE_HOME/tools/docker/cli-plugins/docker-compose
#
# The binary is both a standalone `docker-compose` and a docker CLI plugin: with
# DOCKER_CONFIG=$THREADLINE_HOME/tools/docker, `docker compose ...` runs it. Machines without a
# Docker engine (the tests' machines) need it only for `docker compose config`, which reads and
# validates compose files without talking to an engine.
#
# Needs Go (go.mod of compose asks for 1.24 or newer) and the Go module proxy. `go install` does
# not work for this module (its go.mod has exclude directives), so the module is downloaded,
# copied and built in place. A binary that already reports the wanted version is reused.
# Prints the binary's path on stdout; progress goes to stderr.
set -euo pipefail

VERSION="${COMPOSE_VERSION:-v2.40.3}"
MODULE="github.com/docker/compose/v2"
REPO_ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
HOME_DIR="${THREADLINE_HOME:-$REPO_ROOT/.threadline}"
case "$HOME_DIR" in /*) ;; *) HOME_DIR="$REPO_ROOT/$HOME_DIR" ;; esac
OUT_DIR="$HOME_DIR/tools/docker/cli-plugins"
OUT="$OUT_DIR/docker-compose"

if [ -x "$OUT" ] && "$OUT" version --short 2>/dev/null | grep -qx "${VERSION#v}"; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { echo "build-compose: Go is not installed (needed to build docker compose $VERSION)" >&2; exit 2; }

mkdir -p "$OUT_DIR"
work="$(mktemp -d "$HOME_DIR/tools/compose-build.XXXXXX")"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

echo "build-compose: downloading $MODULE@$VERSION" >&2
dir="$(go mod download -json "$MODULE@$VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"

echo "build-compose: building (a few minutes on a cold Go cache)" >&2
(cd "$work/src" && CGO_ENABLED=0 go build -trimpath \
  -ldflags "-w -X $MODULE/internal.Version=$VERSION" -o "$work/docker-compose" ./cmd) >&2
mv -f "$work/docker-compose" "$OUT"
echo "$OUT"
