#!/usr/bin/env bash
# Runs tools/train/selftest.py, which prints its own "arbor-tests:" summary line.
set -uo pipefail
python3 "$1"
