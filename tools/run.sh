#!/usr/bin/env bash
# README's run command: installs what is missing, builds the server and starts it on the
# embedded default config (configs/tiny.yaml). Extra arguments go to `arbor serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
bazel build //server:arbor
exec bazel-bin/server/arbor serve "$@"
