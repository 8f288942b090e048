#!/usr/bin/env bash
# Bundles built binaries with the non-system shared libraries they load, for a GPU host that has
# glibc, libstdc++ and the CUDA driver/cuBLAS but not Debian's gRPC/Abseil/spdlog/... stack.
#
#   tools/bundle.sh [OUT_DIR] [TARGET ...]
#
# Defaults: OUT_DIR=bundle, TARGETS = the server, the benchmarks and the cc_tests tagged gpu
# (BUNDLE_TESTS='kind(cc_test, //...)' bundles every test; CI runs the others). The bundle
# holds bin/, lib/ and run.sh, a launcher: `bundle/run.sh arbor serve ...`,
# `bundle/run.sh ops_parity_test`.
# It is also packed as OUT_DIR.tar.xz (OpenBLAS alone is 35 MB; the pack travels in ~1/10 the
# space): on the GPU host, `tar xJf bundle.tar.xz && bundle/run.sh ...`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bundle}
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(echo //server:arbor; echo //tools:bench_engine; echo //tools:bench_decode
    echo //tools:bench_sampling; echo //tools:bench_moe; echo //tools:bench_attention; echo //tools:bench_linear
    echo //tools:bench_cce
    bazel query "${BUNDLE_TESTS:-attr(tags, gpu, kind(cc_test, //...))}" 2>/dev/null)
fi
bazel build "${targets[@]}"

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
# Provided by every GPU host (glibc, the C++ runtime, the NVIDIA driver and CUDA libraries).
system='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|libgcc_s|libstdc\+\+|libcuda\.so|libcublas|libcudart|libnvidia)'
for t in "${targets[@]}"; do
  rel=${t#//}
  bin="bazel-bin/${rel/://}"
  cp "$bin" "$out/bin/"
  chmod u+w "$out/bin/$(basename "$bin")"
  ldd "$bin" | awk '/=> \// {print $1, $3}' | while read -r name path; do
    if [[ ! "$name" =~ $system ]] && [ ! -e "$out/lib/$name" ]; then
      cp -L "$path" "$out/lib/$name"
    fi
  done
done

cat > "$out/run.sh" <<'LAUNCH'
#!/usr/bin/env bash
# Runs a bundled binary with the bundled libraries first on the search path.
here=$(cd "$(dirname "$0")" && pwd)
name=$1
shift
cuda_libs=/usr/local/cuda/lib64
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}:$cuda_libs"
exec "$here/bin/$name" "$@"
LAUNCH
chmod +x "$out/run.sh"
# `bundle/arbor` is the server as one executable, for scripts that take a binary
# (ARBOR_E2E_DEVICE=cuda tests/e2e/run.sh bundle/arbor).
cat > "$out/arbor" <<'LAUNCH'
#!/usr/bin/env bash
exec "$(dirname "$0")/run.sh" arbor "$@"
LAUNCH
chmod +x "$out/arbor"
# Debug sections off (the build's -g1 line tables triple the binaries and the time xz takes to
# pack them); BUNDLE_DEBUG=1 keeps them, for a sanitizer report with source lines.
if [ "${BUNDLE_DEBUG:-0}" != 1 ]; then
  strip --strip-debug "$out"/bin/*
fi
du -sh "$out/bin" "$out/lib"
# With BUNDLE_NODE=1, Node.js for the e2e suites' npm client (the GPU host has none):
# Debian's binary loads only system libraries. It adds ~24 MB to the pack (a device call carries
# at most 64 MiB in all).
if [ "${BUNDLE_NODE:-0}" = 1 ] && node=$(command -v node); then
  mkdir -p "$out/node/bin"
  cp -L "$node" "$out/node/bin/node"
fi
# The e2e suites' npm client travels in the pack too (the GPU host has no registry), when
# installed here and the bundle sits in the repository root.
extra=()
if [ "$(dirname "$out")" = . ] && [ -d tests/e2e/openai/node_modules/openai ]; then
  extra=(tests/e2e/openai/node_modules)
fi
# One xz stream with a dictionary larger than a binary: every binary carries the same ~17 MB of
# device code, which then packs once (72 MB -> 29 MB; about 3 minutes on 2 cores).
XZ_OPT="-T1 --lzma2=preset=6,dict=192MiB" tar -cJf "$out.tar.xz" -C "$(dirname "$out")" "$(basename "$out")" "${extra[@]}"
du -sh "$out.tar.xz"
