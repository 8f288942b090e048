#!/usr/bin/env bash
# The testbed's models other than chat/ (adapters/, moe/, swa/, policy/, prm/) are committed on
# the branch `testbed`, not on main: the device tool copies main's whole tracked tree to the GPU
# host under a 64 MiB limit, and 30 MB of models there would leave no room for a bundle. This
# puts them under models/testbed/ (git-ignored there), or stores new ones on the branch.
#
#   tools/train/testbed.sh restore        # branch `testbed` (or origin/testbed) -> models/testbed/
#   tools/train/testbed.sh store MESSAGE  # models/testbed/{adapters,moe,swa,policy,prm} -> a new
#                                         # commit on the branch `testbed` (main is not touched)
set -euo pipefail
cd "$(dirname "$0")/../.."
dirs=(adapters moe swa policy prm)
ref=
for r in testbed origin/testbed; do
  if git rev-parse -q --verify "$r^{commit}" >/dev/null; then ref=$r; break; fi
done
case "${1:-}" in
  restore)
    [ -n "$ref" ] || { echo "testbed.sh: no branch testbed or origin/testbed (git fetch origin testbed)" >&2; exit 1; }
    paths=()
    for d in "${dirs[@]}"; do
      if git cat-file -e "$ref:models/testbed/$d" 2>/dev/null; then paths+=("models/testbed/$d"); fi
    done
    rm -rf "${paths[@]}"
    git archive "$ref" "${paths[@]}" | tar -x
    echo "restored ${paths[*]} from $ref ($(git rev-parse --short "$ref"))" ;;
  store)
    msg=${2:?usage: testbed.sh store MESSAGE}
    # A commit of the branch's tree with these directories replaced, built in a scratch index.
    export GIT_INDEX_FILE
    GIT_INDEX_FILE=$(mktemp)
    trap 'rm -f "$GIT_INDEX_FILE"' EXIT
    if [ -n "$ref" ]; then git read-tree "$ref"; else git read-tree --empty; fi
    for d in "${dirs[@]}"; do
      git rm -r -q -f --cached --ignore-unmatch "models/testbed/$d"
      if [ -d "models/testbed/$d" ]; then git add -f "models/testbed/$d"; fi
    done
    tree=$(git write-tree)
    parent=()
    [ -n "$ref" ] && parent=(-p "$(git rev-parse "$ref")")
    commit=$(git commit-tree "$tree" "${parent[@]}" -m "$msg")
    git update-ref refs/heads/testbed "$commit"
    echo "testbed is now $(git rev-parse --short "$commit")" ;;
  *)
    sed -n '2,11p' "$0"; exit 2 ;;
esac
