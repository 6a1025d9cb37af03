"""DDP on CPU: `torchrun --nproc_per_node 2` (gloo) trains one epoch; both ranks log the same
number of optimiser steps (the shards hold uneven numbers of examples per rank and worker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mammotrain.data import plan_examples, read_manifest, split_examples
from mammotrain.tasks import get_task

from .test_train_shards import train_shards  # noqa: F401  (session fixture)


def test_torchrun_two_ranks_equal_steps(train_shards, tmp_path):
    out = tmp_path / "ddp"
    ex, _ = plan_examples(read_manifest(train_shards), get_task("density"), 1)
    n_train = len(split_examples(ex, 0, 0.2, 0).train)
    batch = 3
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mammotrain.cli", "train", "--fold", "0", "--task", "density", "--views", "1",
           "--backbone", "test_resnet", "--size", "32", "--epochs", "1", "--batch-size",
           str(batch), "--workers", "1", "--device", "cpu", "--gradcam", "0",
           "--shards", str(train_shards), "--out", str(out), "--val-fraction", "0.2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, f"torchrun failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    logs = {}
    for rank in (0, 1):
        lines = (out / "fold0" / f"train_log.rank{rank}.jsonl").read_text().splitlines()
        logs[rank] = [json.loads(ln) for ln in lines]
    assert len(logs[0]) == len(logs[1]) == 1
    a, b = logs[0][0], logs[1][0]
    assert a["world"] == b["world"] == 2
    per_rank = (n_train + 1) // 2
    assert a["steps"] == b["steps"] == a["expected_steps"] == per_rank // batch
    assert a["examples"] == b["examples"] == a["steps"] * batch
    assert (out / "fold0" / "metrics.json").exists()  # rank 0 evaluated the test fold


def test_torchrun_detection_with_early_stopping(train_shards, tmp_path):
    """The detector under DDP; rank 0's early-stopping decision reaches rank 1 (both ranks
    train the same epochs, nobody waits in a collective the other left)."""
    out = tmp_path / "ddp-det"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mammotrain.cli", "train", "--fold", "1", "--task", "detection",
           "--backbone", "test_resnet", "--size", "32", "--epochs", "4", "--patience", "1",
           "--select", "loss", "--batch-size", "4", "--workers", "0", "--device", "cpu",
           "--gradcam", "0", "--max-steps-per-epoch", "2", "--dec-layers", "1",
           "--shards", str(train_shards), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, f"torchrun failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    epochs = {rank: len((out / "fold1" / f"train_log.rank{rank}.jsonl").read_text().splitlines())
              for rank in (0, 1)}
    assert epochs[0] == epochs[1] >= 2
    history = [json.loads(ln) for ln in (out / "fold1" / "history.jsonl").read_text().splitlines()]
    assert len(history) == epochs[0]
    stopped = [h["epoch"] for h in history if h["early_stop"]]
    assert stopped == ([] if epochs[0] == 4 else [epochs[0] - 1])
    assert {"map25", "recall25"} <= set(json.loads((out / "fold1" / "metrics.json").read_text()))
