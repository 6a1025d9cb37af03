#!/usr/bin/env bash
# `make demo`: the main job on a built-in default, a small synthetic multi-vendor cohort.
set -euo pipefail
OUT=${1:-demo_out}
BIN=${BIN:-.venv/bin}
export MAMMOPREP_SALT=${MAMMOPREP_SALT:-demo-salt}
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== 1. synthetic cohort -> $OUT/cohort"
"$BIN/mammoprep" synth "$OUT/cohort" --patients 12 --seed 0

echo "== 2. inspect (one line per image; JSON lines in $OUT/inspect.jsonl)"
"$BIN/mammoprep" inspect "$OUT/cohort" | head -n 8
"$BIN/mammoprep" inspect --json "$OUT/cohort" > "$OUT/inspect.jsonl"
echo "   ... $(wc -l < "$OUT/inspect.jsonl") images inspected"
