"""Appending records to bench/results.json from the Python peers, as tools/bench/results.h's
AppendResults does for the C++ benchmarks: the file is a JSON list; a missing, unreadable or
non-list file starts a new one."""
import json
import os


def append_records(path, records):
    existing = []
    if os.path.exists(path):
        try:
            with open(path) as f:
                existing = json.load(f)
        except ValueError:
            existing = []
        if not isinstance(existing, list):
            existing = []
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(existing + records, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"appended {len(records)} records to {path}")
