#!/usr/bin/env bash
# One GPU check in one go (issue 24, item 5): under 8 minutes on one lent H100, one line of
# figures per step, and a --tiny CPU mode that tests/train/test_gpu_check.py runs so it cannot rot.
#
#   bash benchmarks/gpu_check.sh [--tiny] [--out DIR]
#
# Steps (each prints "gpu_check: <step>: <figures>" or "gpu_check: <step>: skipped (<why>)"):
#   train   AMP optimiser steps of the two-view EfficientNet-B0 (random init) at 512 px,
#           model only vs fed by the shard loader (benchmarks/train_gpu.py, its own shards)
#   ddp     a short `mammotrain train` through torchrun --standalone --nproc_per_node 1
#           (NCCL on a GPU, gloo on the CPU): exit 0, steps/s and wall time
#   decode  the nvimgcodec plug-in against the CPU decoder on the same JPEG 2000 lossless
#           files (synthetic + ../shared/testdata/dicom/wg04_MG1_J2KI.dcm, lossy, if
#           present): identical pixels and images/s; skipped without nvimgcodec or a GPU
#   export  `mammotrain export` of the ddp step's model to ONNX, then onnxruntime (CUDA
#           provider if onnxruntime-gpu is installed, else CPU) against torch, within a
#           tolerance; skipped without onnxruntime
# and ends with "gpu_check: done in N s". Exit status 1 only when a step that could run
# failed (2: bad options). --tiny: CPU, 64 px, test_resnet, a few steps (about a minute on
# 2 cores). --out DIR: keep the figures there as gpu_check.json and gpu_check.md.
#
# Python: $PYTHON, else the checkout's .venv/bin/python, else python on PATH (it needs
# mammoprep's [fast,train,dev] extras; [gpu] for the decode step).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

TINY=0
OUT=""
while (($#)); do
    case $1 in
        --tiny) TINY=1 ;;
        --out) [[ $# -ge 2 ]] || { echo "--out needs a folder" >&2; exit 2; }
               OUT=$2; shift ;;
        --out=*) OUT=${1#--out=} ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
if [[ -n ${PYTHON:-} ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=$REPO/.venv/bin/python
else PY=$(command -v python || command -v python3)
fi
[[ -n $OUT ]] && OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$REPO/.numba_cache}
export MAMMOPREP_SALT=${MAMMOPREP_SALT:-gpu-check-salt-not-secret}

START=${EPOCHREALTIME:-$(date +%s)}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
RES=$WORK/results
JOBS=$(nproc 2>/dev/null || echo 2)
CHECK=("$PY" benchmarks/gpu_check.py --results "$RES")
mammoprep() { "$PY" -m mammoprep.cli "$@"; }
elapsed() { awk -v a="$1" -v b="${EPOCHREALTIME:-$(date +%s)}" 'BEGIN { printf "%.1f", b - a }'; }

if ((TINY)); then
    TRAIN_ARGS=(--backbone test_resnet --size 64 --batch 4 --steps 3 --warmup 1 --patients 4
                --workers 0 --device cpu --jobs 2)
    SIZE=64 FOLDS=2 DEVICE=cpu
    DDP_ARGS=(--backbone test_resnet --epochs 1 --batch-size 2 --workers 0
              --max-steps-per-epoch 3 --val-fraction 0.5)
    DECODE_ARGS=(--repeats 2) EXPORT_ARGS=(--batch 2 --runs 3)
else
    TRAIN_ARGS=(--jobs "$JOBS")  # train_gpu.py's defaults: EfficientNet-B0, 512 px, batch 32
    SIZE=512 FOLDS=5 DEVICE=auto
    DDP_ARGS=(--backbone efficientnet_b0 --epochs 3 --batch-size 8 --workers 4)
    DECODE_ARGS=(--repeats 3) EXPORT_ARGS=(--batch 16 --runs 10)
fi

# step NAME CMD...: run CMD with its output in $WORK/NAME.log; on failure show its tail.
FAILED=()
step() {
    local name=$1 rc=0
    shift
    "$@" >"$WORK/$name.log" 2>&1 || rc=$?
    if ((rc)); then
        echo "--- $name: '$*' exited $rc; last lines of its output:" >&2
        tail -n 25 "$WORK/$name.log" >&2
    fi
    return $rc
}
# record NAME: print the step's line (the helper's output) and note a failure.
record() {
    local name=$1 rc=0
    shift
    "${CHECK[@]}" "$@" || rc=$?
    ((rc == 0)) || FAILED+=("$name")
}

# 1. training steps: model only vs fed by the loader (train_gpu.py builds the shards)
if step train "$PY" benchmarks/train_gpu.py "${TRAIN_ARGS[@]}" --keep "$WORK/train"; then
    record train train "$WORK/train.log"
else
    record train fail train "benchmarks/train_gpu.py exited non-zero (log above)"
fi
COHORT=$WORK/train/cohort

# 2. torchrun, one process: the trainer's DDP launch path (a fold split of the same cohort)
RUN=$WORK/ddp-run
if [[ ! -d $COHORT ]]; then
    record ddp skip ddp "no synthetic cohort: the train step failed"
elif step shards mammoprep shard "$COHORT" -o "$WORK/ddp-shards" --labels "lumina:$COHORT" \
        --size "$SIZE" --folds "$FOLDS" --samples-per-shard 8 --allow-rejects -j "$JOBS"; then
    T0=${EPOCHREALTIME:-$(date +%s)}
    if step ddp timeout 300 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 \
            -m mammotrain.cli train --fold 0 --task diagnosis --views 2 --size "$SIZE" \
            --device "$DEVICE" --gradcam 0 --shards "$WORK/ddp-shards" --out "$RUN" \
            "${DDP_ARGS[@]}"; then
        record ddp ddp "$RUN" --wall "$(elapsed "$T0")" --device "$DEVICE"
    else
        record ddp fail ddp "torchrun mammotrain train exited non-zero (log above)"
    fi
else
    record ddp fail ddp "mammoprep shard for the fold split failed (log above)"
fi

# 3. nvimgcodec vs the CPU decoder on JPEG 2000: the cohort's lossless files (GPU: also
#    full-field ones), the real lossy file of ../shared when the checkout has it beside it
J2K=("$COHORT")
if ((!TINY)) && step j2k mammoprep synth "$WORK/j2k" --patients 2 --size 4096x3328 -j "$JOBS"; then
    J2K=("$WORK/j2k")  # 2 patients: IMS (uncompressed) and Fujifilm (JPEG 2000 lossless)
fi
for shared in ../shared ../../shared; do
    if [[ -f $shared/testdata/dicom/wg04_MG1_J2KI.dcm ]]; then
        J2K+=("$shared/testdata/dicom/wg04_MG1_J2KI.dcm")
        break
    fi
done
if [[ -d ${J2K[0]} ]]; then
    record decode decode "${DECODE_ARGS[@]}" "${J2K[@]}"
else
    record decode skip decode "no JPEG 2000 files: the train step made no cohort"
fi

# 4. ONNX export of the ddp step's model, onnxruntime against torch
MODEL=$RUN/fold0/best.safetensors
if [[ ! -f $MODEL ]]; then
    record export skip export "no trained model: the ddp step failed"
elif ! "$PY" -c "import onnxruntime" 2>/dev/null; then
    record export skip export "onnxruntime not installed"
elif step export "$PY" -m mammotrain.cli export -c "$MODEL" -o "$WORK/model.onnx" --no-check; then
    record export export "$MODEL" "$WORK/model.onnx" "${EXPORT_ARGS[@]}"
else
    record export fail export "mammotrain export exited non-zero (log above)"
fi

SECS=$(elapsed "$START")
if [[ -n $OUT ]]; then
    REPORT=(report --out "$OUT" --seconds "$SECS")
    ((TINY)) && REPORT+=(--tiny)
    "${CHECK[@]}" "${REPORT[@]}"
fi
if ((${#FAILED[@]})); then
    echo "gpu_check: done in ${SECS%.*} s (failed: ${FAILED[*]})"
else
    echo "gpu_check: done in ${SECS%.*} s"
fi
((${#FAILED[@]} == 0))
