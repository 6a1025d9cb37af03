#!/usr/bin/env bash
# `make train-all`: every task x view configuration of LUMINA (diagnosis also four-view,
# exam-level), each on raw and harmonised shards (the harmonisation ablation, with its paired
# test), and the multi-task DETR (detection); one combined report (TRAIN_OUT/report.md) and one
# paper-style results table (TRAIN_OUT/results.md, results.png: `mammotrain compare` over every
# run, raw beside harmonised with CIs and paired p-values).
#
# Default: a synthetic cohort built here (`mammoprep synth`, `reference`, `shard`, raw and
# harmonised, every breast labelled from synth's labels.csv, KFOLDS patient-level folds) and a
# CPU setting that learns every task in about 10 minutes on 2 cores (benchmarks/RESULTS.md):
# timm `test_resnet` from scratch at 64 px, 6 epochs, cosine lr 2e-3, batch 8, an EMA of the
# weights (0.95 per step) for validation, selection and testing; detection at 96 px.
# The paper's setting on real shards, for example:
#   make train-all SHARDS=lumina_harm RAW_SHARDS=lumina_raw PRETRAINED=... EPOCHS=100 \
#       BACKBONES="efficientnet_b0 resnet50 densenet121 swin_tiny_patch4_window7_224" \
#       DIAG_SIZE=512 SIZE=224 BATCH=32 SCHEDULE=step STEP_SIZE=30 EMA=
# (PRETRAINED applies to every backbone: run one backbone per invocation when using it.)
# Settings (environment or make variables):
#   TRAIN_OUT   output folder                                   [train_all_out]
#   SHARDS      harmonised shard folder (real data)             [synthetic, built here]
#   RAW_SHARDS  raw shards of the same images: every configuration also runs on them
#               (ablation)                                      [synthetic; none: harmonised only]
#   BACKBONES   space-separated timm names                      [test_resnet]
#   SIZE        input size of every task; DIAG_SIZE / BIRADS_SIZE / DENSITY_SIZE override
#               per task (paper: 512 / 224 / 224)               [64]
#   EPOCHS BATCH WORKERS FOLDS DEVICE                           [6 8 0 all auto]
#   LR          learning rate [synthetic 2e-3; else the trainer's per backbone]
#               (FOLDS: test folds to run, e.g. 0,1; all = every fold of the shards)
#   SCHEDULE    lr schedule: cosine, step or constant           [cosine]
#   STEP_SIZE   SCHEDULE=step: epochs between lr x0.1 steps     [2/3 of EPOCHS]
#   EMA         weight average decay per step (empty: off)      [0.95]
#   PRETRAINED  local weight file (.pth/.safetensors) for every backbone   [none]
#   DET_SHARDS  shards whose JSON carries lesion boxes, for detection       [synthetic: the
#               harmonised shards; none with SHARDS set: no detection run]
#   DET_SIZE DET_EPOCHS DET_LR  detection input size, epochs, learning rate (paper: 512, 400
#               with patience 150, 1e-4 with pretrained backbones)  [96 8; synthetic 1e-3]
#   EXTRA       more `mammotrain` options, e.g. "--max-steps-per-epoch 20"
#   PATIENTS SYNTH_SIZE SHARD_SIZE KFOLDS  the synthetic cohort   [300 256x208 96 2]
# Runs resume: finished folds are kept, so an interrupted run continues where it stopped.
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${TRAIN_OUT:-train_all_out}
BACKBONES=${BACKBONES:-test_resnet}
SIZE=${SIZE:-64}
DIAG_SIZE=${DIAG_SIZE:-$SIZE}
BIRADS_SIZE=${BIRADS_SIZE:-$SIZE}
DENSITY_SIZE=${DENSITY_SIZE:-$SIZE}
EPOCHS=${EPOCHS:-6}
SCHEDULE=${SCHEDULE:-cosine}
STEP_SIZE=${STEP_SIZE:-$(( EPOCHS >= 90 ? 30 : (2 * EPOCHS + 2) / 3 ))}
BATCH=${BATCH:-8}
LR=${LR:-}
EMA=${EMA-0.95}
WORKERS=${WORKERS:-0}
DEVICE=${DEVICE:-auto}
PATIENTS=${PATIENTS:-300}
SYNTH_SIZE=${SYNTH_SIZE:-256x208}
SHARD_SIZE=${SHARD_SIZE:-96}
KFOLDS=${KFOLDS:-2}
export MAMMOPREP_SALT=${MAMMOPREP_SALT:-train-all-salt-not-secret}
export HF_HUB_OFFLINE=1
START=$(date +%s)
mkdir -p "$OUT"

if [ -z "${SHARDS:-}" ]; then
    DATA="$OUT/data"
    COHORT="$DATA/cohort"
    if [ ! -f "$COHORT/labels.csv" ]; then
        echo "== synthetic cohort: $PATIENTS patients ($SYNTH_SIZE) -> $COHORT"
        "$BIN/mammoprep" synth "$COHORT" --patients "$PATIENTS" --seed 0 --size "$SYNTH_SIZE" -j 2
    fi
    if [ ! -f "$DATA/reference.npz" ]; then
        echo "== low-energy reference -> $DATA/reference.npz"
        "$BIN/mammoprep" reference "$COHORT" -o "$DATA/reference.npz"
    fi
    # every breast labelled (synth's labels.csv: pathology, BI-RADS, density, lesion boxes);
    # `--labels lumina:$COHORT` would label the sheets' named breasts only, half the examples
    for kind in raw harmonized; do
        if [ ! -f "$DATA/shards_$kind/images.parquet" ]; then
            echo "== $kind shards ($SHARD_SIZE px, $KFOLDS folds) -> $DATA/shards_$kind"
            ref=()
            [ "$kind" = harmonized ] && ref=(--ref "$DATA/reference.npz")
            "$BIN/mammoprep" shard "$COHORT" -o "$DATA/shards_$kind" \
                --labels "csv:$COHORT/labels.csv" --size "$SHARD_SIZE" --folds "$KFOLDS" \
                --samples-per-shard 32 --allow-rejects -j 2 "${ref[@]}"
        fi
    done
    SHARDS="$DATA/shards_harmonized"
    RAW_SHARDS="$DATA/shards_raw"
    DET_SHARDS="$DATA/shards_harmonized"
    LR=${LR:-2e-3}          # from scratch; with real data the trainer's default per backbone
    DET_LR=${DET_LR:-1e-3}
fi
DET_SHARDS=${DET_SHARDS:-}
DET_SIZE=${DET_SIZE:-96}
DET_EPOCHS=${DET_EPOCHS:-8}
DET_LR=${DET_LR:-}
RAW_SHARDS=${RAW_SHARDS:-}

common=(--batch-size "$BATCH" --workers "$WORKERS" --device "$DEVICE" --schedule "$SCHEDULE"
        --step-size "$STEP_SIZE" --resume)
[ -n "$EMA" ] && common+=(--ema "$EMA")
[ -n "${FOLDS:-}" ] && [ "$FOLDS" != all ] && common+=(--folds "$FOLDS")
[ -n "${PRETRAINED:-}" ] && common+=(--pretrained "$PRETRAINED")
# shellcheck disable=SC2206
[ -n "${EXTRA:-}" ] && common+=($EXTRA)
cls=(--epochs "$EPOCHS" "${common[@]}")
[ -n "$LR" ] && cls+=(--lr "$LR")

runs=()
ablations=()
# one classification configuration: raw vs harmonised (`mammotrain ablation`), or harmonised
# only without RAW_SHARDS
configuration() {  # task views size out
    local task=$1 views=$2 size=$3 out=$4
    if [ -n "$RAW_SHARDS" ]; then
        echo "== [$bb] $task $views-view, raw and harmonised"
        "$BIN/mammotrain" ablation --raw-shards "$RAW_SHARDS" --harmonized-shards "$SHARDS" \
            --task "$task" --views "$views" --backbone "$bb" --size "$size" --out "$out" \
            "${cls[@]}"
        runs+=("$out/raw" "$out/harmonized")
        ablations+=(--ablation "$out")
    else
        echo "== [$bb] $task $views-view (no RAW_SHARDS: harmonised only)"
        "$BIN/mammotrain" cv --shards "$SHARDS" --task "$task" --views "$views" \
            --backbone "$bb" --size "$size" --out "$out" "${cls[@]}"
        runs+=("$out")
    fi
}
for bb in $BACKBONES; do
    R="$OUT/runs/$bb"
    mkdir -p "$R"
    configuration diagnosis 2 "$DIAG_SIZE" "$R/diagnosis-2v"
    configuration diagnosis 1 "$DIAG_SIZE" "$R/diagnosis-1v"
    configuration diagnosis 4 "$DIAG_SIZE" "$R/diagnosis-4v"
    configuration birads2 2 "$BIRADS_SIZE" "$R/birads2-2v"
    configuration birads3 2 "$BIRADS_SIZE" "$R/birads3-2v"
    configuration density 2 "$DENSITY_SIZE" "$R/density-2v"
    if [ -n "$DET_SHARDS" ]; then
        echo "== [$bb] detection (multi-task DETR), single-view"
        "$BIN/mammotrain" cv --shards "$DET_SHARDS" --task detection --backbone "$bb" \
            --size "$DET_SIZE" --out "$R/detection-1v" --epochs "$DET_EPOCHS" \
            ${DET_LR:+--lr "$DET_LR"} "${common[@]}"
        runs+=("$R/detection-1v")
    fi
done

ELAPSED=$(( $(date +%s) - START ))
NOTES="Shards: \`$SHARDS\` (harmonised)${RAW_SHARDS:+, raw for the ablation: \`$RAW_SHARDS\`}. \
Backbones: $BACKBONES; input sizes: diagnosis $DIAG_SIZE, BI-RADS $BIRADS_SIZE, density \
$DENSITY_SIZE${DET_SHARDS:+, detection $DET_SIZE ($DET_EPOCHS epochs, ${DET_LR:+lr $DET_LR, }shards \`$DET_SHARDS\`)}; $EPOCHS epochs, ${LR:+lr $LR, }$SCHEDULE schedule, ${EMA:+EMA $EMA, }batch $BATCH, device $DEVICE${EXTRA:+, extra: $EXTRA}. \
Values are %, mean ± std over the test folds; models selected on a patient-grouped \
validation split of the training folds. Wall time of this invocation: ${ELAPSED}s."
"$BIN/mammotrain" combine "${runs[@]}" "${ablations[@]}" -o "$OUT/report.md" \
    --title "LUMINA configurations: all tasks and views, harmonisation ablation" --notes "$NOTES"
# the one results table: every run (each ablation's raw run beside its harmonised twin)
"$BIN/mammotrain" compare "${runs[@]}" -o "$OUT" --notes "${NOTES%% Values are*} Wall \
time of this invocation: ${ELAPSED}s." \
    --title "LUMINA configurations: raw vs harmonised, pooled out-of-fold"
echo "== combined report: $OUT/report.md; results table: $OUT/results.md, $OUT/results.png (${ELAPSED}s)"
