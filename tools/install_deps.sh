#!/usr/bin/env bash
# Installs the Debian packages Arbor builds and tests with, if any is missing (idempotent).
# Needs root (or sudo) only when something is missing.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap bazel-platforms            # the build (Bazel 4.2.3, offline)
  g++ clang libclang-rt-14-dev               # compilers; clang's runtime for libFuzzer/ASan
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev
  libabsl-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libyaml-cpp-dev
  prometheus-cpp-dev libboost1.81-dev libssl-dev
  libcpp-httplib-dev                         # the HTTP client of the C++ server tests
  catch2 libopenblas-dev libglpk-dev libre2-dev libicu-dev
  curl python3 python3-grpcio                # test clients
)
# Node.js and npm run the official openai client (tests/e2e); most images have them already.
command -v node >/dev/null && command -v npm >/dev/null || PACKAGES+=(nodejs npm)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
echo "install_deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"

if [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "install_deps: warning: no CUDA toolkit at /usr/local/cuda; the CUDA targets cannot build" >&2
fi
