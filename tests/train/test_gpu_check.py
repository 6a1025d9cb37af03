"""``benchmarks/gpu_check.sh --tiny``: the one-go GPU check runs end to end on the CPU (64 px,
test_resnet, a few steps), so the script a lent GPU runs cannot rot. Every step prints its
line (figures, or skipped with the reason), the training steps report positive images/s,
the torchrun training exits 0, and the export step compares onnxruntime with torch when
onnxruntime is installed (else it says "onnxruntime not installed"); the decode step runs
nvimgcodec against the CPU decoder where the plug-in can run, and is skipped with the
reason elsewhere."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STEPS = ("train", "ddp", "decode", "export")


def test_gpu_check_tiny(tmp_path):
    from mammoprep import decoders

    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--tiny", "--out",
                        str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, f"gpu_check.sh failed:\n{r.stdout}\n{r.stderr[-5000:]}"
    lines = {}
    for step in STEPS:
        found = re.findall(rf"^gpu_check: {step}: (.+)$", r.stdout, re.M)
        assert len(found) == 1, f"step {step}: {found}\n{r.stdout}"
        lines[step] = found[0]
        assert not lines[step].startswith("FAILED")
        skipped = re.fullmatch(r"skipped \((.+)\)", lines[step])
        assert skipped is None or skipped.group(1).strip(), lines[step]
    assert re.search(r"^gpu_check: done in \d+ s$", r.stdout.splitlines()[-1])

    doc = json.loads((out / "gpu_check.json").read_text())
    assert doc["tiny"] is True and doc["failed"] == []
    assert set(doc["steps"]) == set(STEPS)
    md = (out / "gpu_check.md").read_text()
    assert all(f"| {s} |" in md for s in STEPS)

    # 1. training steps: both rates measured and positive
    train = doc["steps"]["train"]
    assert train["status"] == "ok", lines["train"]
    assert train["figures"]["model_only_images_s"] > 0
    assert train["figures"]["fed_images_s"] > 0
    assert re.search(r"model only [\d.]+ images/s, fed by loader .* [\d.]+ images/s",
                     lines["train"])

    # 2. torchrun training exited 0 and took optimiser steps
    ddp = doc["steps"]["ddp"]
    assert ddp["status"] == "ok", lines["ddp"]
    assert "exit 0" in lines["ddp"]
    assert ddp["figures"]["world"] == 1 and ddp["figures"]["steps"] >= 1
    assert ddp["figures"]["wall_s"] > 0

    # 3. decode: GPU against CPU where nvimgcodec can run, else skipped with the reason
    decode = doc["steps"]["decode"]
    assert decode["figures"]["files"] >= 1 and decode["figures"]["cpu_images_s"] > 0
    if decoders.is_available("nvimgcodec"):
        assert decode["status"] == "ok", lines["decode"]
        assert decode["figures"]["identical"] == decode["figures"]["files"]
    else:
        assert decode["status"] == "skipped"
        assert lines["decode"].startswith("skipped (nvimgcodec: ")

    # 4. export: outputs compared when onnxruntime is installed, else the reason
    export = doc["steps"]["export"]
    if importlib.util.find_spec("onnxruntime") is not None:
        assert export["status"] == "ok", lines["export"]
        diffs = export["figures"]["max_abs_diff"]
        assert set(diffs) == {"logits", "probs"}
        assert max(diffs.values()) <= export["figures"]["tolerance"]
        assert "max |diff| logits" in lines["export"]
    else:
        assert export["status"] == "skipped"
        assert lines["export"] == "skipped (onnxruntime not installed)"
