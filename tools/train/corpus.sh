#!/usr/bin/env bash
# Installs the Debian packages the testbed corpus comes from and builds the pack the GPU run
# trains on: train_data/corpus.tar.xz (git-ignored; about 10 MiB). Debian 12, root or sudo.
#
#   tools/train/corpus.sh            # then: tools/train/train_all.py --corpus train_data/corpus.tar.xz ...
#
# Extra arguments go to corpus.py (e.g. --gcide-fraction 0.5 for a smaller pack).
set -euo pipefail
cd "$(dirname "$0")/../.."
pkgs=(bible-kjv bible-kjv-text fortunes fortunes-min fortunes-bofh-excuses fortunes-debian-hints
      dict-gcide dict-devil jargon-text display-dhammapada)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
python3 tools/train/corpus.py --out train_data "$@"
