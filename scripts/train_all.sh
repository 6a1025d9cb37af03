#!/usr/bin/env bash
# `make train-all`: every task x view configuration of LUMINA (diagnosis also four-view,
# exam-level) plus the harmonisation ablation and the multi-task DETR (detection),
# cross-validation each, one combined report (TRAIN_OUT/report.md) and one paper-style results
# table (TRAIN_OUT/results.md, results.png: `mammotrain compare` over every run, raw beside
# harmonised with CIs and paired p-values).
#
# Default: a synthetic cohort (built here with `mammoprep synth`, `reference` and `shard`, raw
# and harmonised, if absent) and a fast CPU setting: timm `test_resnet` from scratch at 64 px,
# 12 epochs (~9 min on 2 cores). The paper's setting on real shards, for example:
#   make train-all SHARDS=lumina_harm RAW_SHARDS=lumina_raw PRETRAINED=... EPOCHS=100 \
#       BACKBONES="efficientnet_b0 resnet50 densenet121 swin_tiny_patch4_window7_224" \
#       DIAG_SIZE=512 SIZE=224 BATCH=32
# (PRETRAINED applies to every backbone: run one backbone per invocation when using it.)
# Settings (environment or make variables):
#   TRAIN_OUT   output folder                                   [train_all_out]
#   SHARDS      harmonised shard folder (real data)             [synthetic, built here]
#   RAW_SHARDS  raw shards of the same images, for the ablation [synthetic; none: no ablation]
#   BACKBONES   space-separated timm names                      [test_resnet]
#   SIZE        input size of every task; DIAG_SIZE / BIRADS_SIZE / DENSITY_SIZE override
#               per task (paper: 512 / 224 / 224)               [64]
#   EPOCHS BATCH WORKERS FOLDS DEVICE                           [12 16 2 all auto]
#   STEP_SIZE   epochs between lr x0.1 steps      [30 when EPOCHS >= 90, else 2/3 of EPOCHS]
#   PRETRAINED  local weight file (.pth/.safetensors) for every backbone   [none]
#   DET_SHARDS  shards whose JSON carries lesion boxes, for detection       [synthetic, built
#               here from synth's labels.csv; none with SHARDS set: no detection run]
#   DET_SIZE DET_EPOCHS   detection input size and epochs (paper: 512, 400 with patience 150)
#                                                                           [96, 8]
#   DET_LR      detection learning rate [paper: 1e-4 (pretrained backbones); synthetic
#               default from scratch: 1e-3]
#   EXTRA       more `mammotrain` options, e.g. "--lr 1e-4 --max-steps-per-epoch 20"
#   PATIENTS SYNTH_SIZE SHARD_SIZE  the synthetic cohort           [120 256x208 96]
# Runs resume: finished folds are kept, so an interrupted run continues where it stopped.
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${TRAIN_OUT:-train_all_out}
BACKBONES=${BACKBONES:-test_resnet}
SIZE=${SIZE:-64}
DIAG_SIZE=${DIAG_SIZE:-$SIZE}
BIRADS_SIZE=${BIRADS_SIZE:-$SIZE}
DENSITY_SIZE=${DENSITY_SIZE:-$SIZE}
EPOCHS=${EPOCHS:-12}
STEP_SIZE=${STEP_SIZE:-$(( EPOCHS >= 90 ? 30 : (2 * EPOCHS + 2) / 3 ))}
BATCH=${BATCH:-16}
WORKERS=${WORKERS:-2}
DEVICE=${DEVICE:-auto}
PATIENTS=${PATIENTS:-120}
SYNTH_SIZE=${SYNTH_SIZE:-256x208}
SHARD_SIZE=${SHARD_SIZE:-96}
export MAMMOPREP_SALT=${MAMMOPREP_SALT:-train-all-salt-not-secret}
export HF_HUB_OFFLINE=1
START=$(date +%s)
mkdir -p "$OUT"

if [ -z "${SHARDS:-}" ]; then
    DATA="$OUT/data"
    COHORT="$DATA/cohort"
    if [ ! -f "$COHORT/Malign_Cases.xlsx" ]; then
        echo "== synthetic cohort: $PATIENTS patients ($SYNTH_SIZE) -> $COHORT"
        "$BIN/mammoprep" synth "$COHORT" --patients "$PATIENTS" --seed 0 --size "$SYNTH_SIZE" -j 2
    fi
    if [ ! -f "$DATA/reference.npz" ]; then
        echo "== low-energy reference -> $DATA/reference.npz"
        "$BIN/mammoprep" reference "$COHORT" -o "$DATA/reference.npz"
    fi
    for kind in raw harmonized; do
        if [ ! -f "$DATA/shards_$kind/images.parquet" ]; then
            echo "== $kind shards ($SHARD_SIZE px) -> $DATA/shards_$kind"
            ref=()
            [ "$kind" = harmonized ] && ref=(--ref "$DATA/reference.npz")
            "$BIN/mammoprep" shard "$COHORT" -o "$DATA/shards_$kind" --labels "lumina:$COHORT" \
                --size "$SHARD_SIZE" --samples-per-shard 32 --allow-rejects -j 2 "${ref[@]}"
        fi
    done
    if [ ! -f "$DATA/shards_boxes/images.parquet" ]; then
        echo "== harmonised shards with lesion boxes ($SHARD_SIZE px) -> $DATA/shards_boxes"
        "$BIN/mammoprep" shard "$COHORT" -o "$DATA/shards_boxes" --labels "csv:$COHORT/labels.csv" \
            --size "$SHARD_SIZE" --samples-per-shard 32 --allow-rejects -j 2 \
            --ref "$DATA/reference.npz"
    fi
    SHARDS="$DATA/shards_harmonized"
    RAW_SHARDS="$DATA/shards_raw"
    DET_SHARDS="$DATA/shards_boxes"
    DET_LR=${DET_LR:-1e-3}
fi
DET_SHARDS=${DET_SHARDS:-}
DET_SIZE=${DET_SIZE:-96}
DET_EPOCHS=${DET_EPOCHS:-8}
RAW_SHARDS=${RAW_SHARDS:-}

common=(--epochs "$EPOCHS" --step-size "$STEP_SIZE" --batch-size "$BATCH" --workers "$WORKERS" --device "$DEVICE" --resume)
[ -n "${FOLDS:-}" ] && common+=(--folds "$FOLDS")
[ -n "${PRETRAINED:-}" ] && common+=(--pretrained "$PRETRAINED")
# shellcheck disable=SC2206
[ -n "${EXTRA:-}" ] && common+=($EXTRA)

runs=()
ablations=()
for bb in $BACKBONES; do
    R="$OUT/runs/$bb"
    mkdir -p "$R"
    # diagnosis, two-view: the ablation's harmonised run is this configuration
    if [ -n "$RAW_SHARDS" ]; then
        echo "== [$bb] diagnosis two-view, raw vs harmonised (ablation)"
        "$BIN/mammotrain" ablation --raw-shards "$RAW_SHARDS" --harmonized-shards "$SHARDS" \
            --task diagnosis --views 2 --backbone "$bb" --size "$DIAG_SIZE" \
            --out "$R/ablation-diagnosis-2v" "${common[@]}"
        runs+=("$R/ablation-diagnosis-2v/harmonized")
        ablations+=(--ablation "$R/ablation-diagnosis-2v")
    else
        echo "== [$bb] diagnosis two-view (no RAW_SHARDS: no ablation)"
        "$BIN/mammotrain" cv --shards "$SHARDS" --task diagnosis --views 2 --backbone "$bb" \
            --size "$DIAG_SIZE" --out "$R/diagnosis-2v" "${common[@]}"
        runs+=("$R/diagnosis-2v")
    fi
    echo "== [$bb] diagnosis single-view"
    "$BIN/mammotrain" cv --shards "$SHARDS" --task diagnosis --views 1 --backbone "$bb" \
        --size "$DIAG_SIZE" --out "$R/diagnosis-1v" "${common[@]}"
    runs+=("$R/diagnosis-1v")
    echo "== [$bb] diagnosis four-view (exam: both breasts, one output per breast)"
    "$BIN/mammotrain" cv --shards "$SHARDS" --task diagnosis --views 4 --backbone "$bb" \
        --size "$DIAG_SIZE" --out "$R/diagnosis-4v" "${common[@]}"
    runs+=("$R/diagnosis-4v")
    for task in birads2 birads3 density; do
        size=$BIRADS_SIZE
        [ "$task" = density ] && size=$DENSITY_SIZE
        echo "== [$bb] $task two-view"
        "$BIN/mammotrain" cv --shards "$SHARDS" --task "$task" --views 2 --backbone "$bb" \
            --size "$size" --out "$R/$task-2v" "${common[@]}"
        runs+=("$R/$task-2v")
    done
    if [ -n "$DET_SHARDS" ]; then
        echo "== [$bb] detection (multi-task DETR), single-view"
        det=("${common[@]}")
        det[1]=$DET_EPOCHS
        [ -n "${DET_LR:-}" ] && det+=(--lr "$DET_LR")
        "$BIN/mammotrain" cv --shards "$DET_SHARDS" --task detection --backbone "$bb" \
            --size "$DET_SIZE" --out "$R/detection-1v" "${det[@]}"
        runs+=("$R/detection-1v")
    fi
done

ELAPSED=$(( $(date +%s) - START ))
NOTES="Shards: \`$SHARDS\` (harmonised)${RAW_SHARDS:+, raw for the ablation: \`$RAW_SHARDS\`}. \
Backbones: $BACKBONES; input sizes: diagnosis $DIAG_SIZE, BI-RADS $BIRADS_SIZE, density \
$DENSITY_SIZE${DET_SHARDS:+, detection $DET_SIZE ($DET_EPOCHS epochs${DET_LR:+, lr $DET_LR}, shards \`$DET_SHARDS\`)}; $EPOCHS epochs (lr x0.1 every $STEP_SIZE), batch $BATCH, device $DEVICE${EXTRA:+, extra: $EXTRA}. \
Values are %, mean ± std over the test folds; models selected on a patient-grouped \
validation split of the training folds. Wall time of this invocation: ${ELAPSED}s."
"$BIN/mammotrain" combine "${runs[@]}" "${ablations[@]}" -o "$OUT/report.md" \
    --title "LUMINA configurations: all tasks and views, harmonisation ablation" --notes "$NOTES"
# the one results table: every run, each ablation's raw run beside its harmonised twin
results=("${runs[@]}")
for a in "${ablations[@]}"; do
    if [ -d "$a/raw" ]; then results+=("$a/raw"); fi
done
"$BIN/mammotrain" compare "${results[@]}" -o "$OUT" --notes "${NOTES%% Values are*} Wall \
time of this invocation: ${ELAPSED}s." \
    --title "LUMINA configurations: raw vs harmonised, pooled out-of-fold"
echo "== combined report: $OUT/report.md; results table: $OUT/results.md, $OUT/results.png (${ELAPSED}s)"
