#!/usr/bin/env bash
# `make demo`: the main job on a built-in default, a small synthetic multi-vendor cohort:
# synth -> inspect -> low-energy reference -> harmonise + preview -> shards -> verify ->
# a training smoke test (runs end to end; `make train-all` is where learning is shown).
set -euo pipefail
OUT=${1:-demo_out}
BIN=${BIN:-.venv/bin}
export MAMMOPREP_SALT=${MAMMOPREP_SALT:-demo-salt-not-secret}
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== 1. synthetic cohort -> $OUT/cohort (a quarter of the views with real-archive artefacts)"
"$BIN/mammoprep" synth "$OUT/cohort" --patients 24 --seed 0 --artefacts 0.25

echo "== 2. inspect (first lines; all of it as JSON lines in $OUT/inspect.jsonl)"
"$BIN/mammoprep" inspect "$OUT/cohort" > "$OUT/inspect.txt" 2>/dev/null
head -n 5 "$OUT/inspect.txt" | cut -c1-200
"$BIN/mammoprep" inspect --json "$OUT/cohort" > "$OUT/inspect.jsonl" 2>/dev/null
echo "   ... $(wc -l < "$OUT/inspect.jsonl") images inspected"

echo "== 2b. segmentation contact sheet -> $OUT/qc.png"
"$BIN/mammoprep" qc "$OUT/cohort" -o "$OUT/qc.png" --max 48 2>/dev/null

echo "== 3. low-energy reference -> $OUT/reference.npz"
"$BIN/mammoprep" reference "$OUT/cohort" -o "$OUT/reference.npz" 2>/dev/null

echo "== 4. harmonise the cohort -> $OUT/harmonized (derived DICOMs)"
"$BIN/mammoprep" harmonize --ref "$OUT/reference.npz" "$OUT/cohort" -o "$OUT/harmonized" 2>/dev/null
HIGH=$(grep -l "IMS GIOTTO" "$OUT"/cohort/*/*/L_CC.dcm 2>/dev/null | head -n 1 || true)
HIGH=${HIGH:-$(ls "$OUT"/cohort/*/*/L_CC.dcm | head -n 1)}
"$BIN/mammoprep" preview "$HIGH" --ref "$OUT/reference.npz" -o "$OUT/preview.png"

echo "== 5. shards (harmonised, 512 px, 5 patient-level folds) -> $OUT/shards"
"$BIN/mammoprep" shard "$OUT/cohort" -o "$OUT/shards" --labels "lumina:$OUT/cohort" \
  --ref "$OUT/reference.npz" --size 512 --samples-per-shard 16 2>/dev/null

echo "== 6. verify"
"$BIN/mammoprep" verify "$OUT/shards"

echo "== 7. training SMOKE TEST: the trainer runs end to end on the demo shards (timm test_resnet,"
echo "      64 px, 3 epochs, test fold 0). With ~5 test breasts its figures measure nothing;"
echo "      \`make train-all\` shows learning (every task, pooled AUC with 95 % CI)."
"$BIN/mammotrain" cv --task diagnosis --views 2 --shards "$OUT/shards" --out "$OUT/train" \
  --backbone test_resnet --size 64 --epochs 3 --batch-size 8 --folds 0 --workers 0 \
  --gradcam 2 --device cpu 2>&1 | grep -E "^(fold 0:|report)" || true
echo "   smoke test passed: model trained, tested and reported ($OUT/train/summary.md; ROC:"
echo "   $OUT/train/roc.png, Grad-CAM: $OUT/train/fold0/gradcam.png); not a learning result"
