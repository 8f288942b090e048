#!/usr/bin/env bash
# Where a decode step's device time goes: Nsight Compute times every kernel of one eager step and
# of one graph replay of bench_decode (batch 1, an 8B-shaped bf16 model by default) and sums them
# by kernel. Run on the GPU host from an unpacked bundle (tools/bundle.sh):
#
#   [KINDS="eager graph"] tools/bench/profile_decode.sh [OUT_DIR] [bench_decode flags...]
set -uo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
bundle=${BUNDLE:-$here/bundle}
out=${1:-/tmp/arbor-profile}
shift || true
mkdir -p "$out"
export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64"
for kind in ${KINDS:-eager graph}; do
  echo "== one $kind decode step"
  # --clock-control none: leave the clocks as they are (the device README asks for it).
  ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum --csv \
    --print-units base "$bundle/bin/bench_decode" --steps 8 --profile "$kind" \
    --results "$out/ignored.json" "$@" >"$out/$kind.csv" 2>"$out/$kind.err" ||
    { echo "ncu failed"; tail -5 "$out/$kind.err"; continue; }
  python3 - "$out/$kind.csv" <<'PY'
import collections, csv, sys
rows = [l for l in open(sys.argv[1]) if l.startswith('"')]
total, by = 0.0, collections.defaultdict(lambda: [0, 0.0])
for r in csv.DictReader(rows):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = r["Kernel Name"].split("(")[0][:90]
    ns = float(r["Metric Value"].replace(",", ""))
    by[name][0] += 1
    by[name][1] += ns
    total += ns
print("%d kernels, %.3f ms of device time" % (sum(c for c, _ in by.values()), total / 1e6))
for name, (count, ns) in sorted(by.items(), key=lambda kv: -kv[1][1])[:25]:
    print("%8.3f ms %5.1f%% %5d x  %s" % (ns / 1e6, 100 * ns / total, count, name))
PY
done
