"""mammotrain.train / report: every task x view x backbone sharing trains a step and
evaluates on real shards; checkpoints resume; run reports are written."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from mammotrain.train import TrainConfig, run_cv, train_fold

from .test_train_shards import train_shards  # noqa: F401  (session fixture)

TINY = dict(backbone="test_resnet", size=32, epochs=1, batch_size=4, workers=0,
            max_steps_per_epoch=1, gradcam=0, device="cpu", val_fraction=0.25)

CONFIGS = [(task, views, shared) for task in ("diagnosis", "birads2", "birads3", "density")
           for views, shared in ((1, True), (2, True), (2, False))]


@pytest.mark.parametrize("task,views,shared", CONFIGS)
def test_every_task_and_view_trains_and_evaluates(train_shards, tmp_path, task, views, shared):
    cfg = TrainConfig(task=task, views=views, shared=shared, shards=str(train_shards),
                      out=str(tmp_path), **TINY).validate().resolved()
    metrics = train_fold(cfg, 1, log=lambda m: None)
    fold = tmp_path / "fold1"
    log = [json.loads(ln) for ln in (fold / "train_log.rank0.jsonl").read_text().splitlines()]
    assert log[0]["steps"] == 1 and log[0]["examples"] == 4
    preds = pq.read_table(fold / "predictions.parquet").to_pylist()
    split = json.loads((fold / "split.json").read_text())
    assert sorted(p["uid"] for p in preds) == sorted(split["test"])
    k = {"diagnosis": 2, "birads2": 2, "birads3": 3, "density": 4}[task]
    assert all(len(p["scores"]) == k and abs(sum(p["scores"]) - 1) < 1e-4 for p in preds)
    assert all(p["fold"] == 1 and p["uid"].startswith(p["key"]) for p in preds)
    assert {p["view"] for p in preds} <= ({"cc+mlo"} if views == 2 else {"cc", "mlo"})
    assert {"key", "patient", "label", "energy", "manufacturer"} <= set(preds[0])
    assert metrics["n_test"] == len(preds) and 0 <= metrics["acc"] <= 1
    for name in ("acc", "auc", "precision", "recall", "f1", "specificity"):
        assert name in metrics


def test_cv_report_resume_and_gradcam(train_shards, tmp_path):
    from mammotrain.report import write_ablation_report, write_combined_report

    out = tmp_path / "run"
    cfg = TrainConfig(task="diagnosis", views=2, shards=str(train_shards), out=str(out),
                      folds=(0, 2), **{**TINY, "gradcam": 2})
    run_cv(cfg, log=lambda m: None)
    for name in ("summary.md", "summary.csv", "summary.json", "metrics_per_fold.csv",
                 "subgroup_auc.csv", "roc.png", "config.json", "fold0/gradcam.png",
                 "fold2/best.pt", "fold2/checkpoint.pt"):
        assert (out / name).exists(), name
    md = (out / "summary.md").read_text()
    assert "| ACC | AUC | Precision | Recall | F1 | Specificity |" in md
    assert "by energy" in md and "by vendor" in md
    summary = json.loads((out / "summary.json").read_text())
    assert summary["folds"] == 2
    stored = json.loads((out / "config.json").read_text())
    assert stored["config"]["lr"] == 1e-3 and stored["plan"]["task"] == "diagnosis"

    # resume: a run interrupted after its first epoch continues from the checkpoint;
    # finished folds are kept
    two = TrainConfig(**{**cfg.to_dict(), "folds": (0, 2), "epochs": 2})

    def crash_after_first_epoch(msg):
        if "fold 2 epoch 1/2" in msg:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cv(TrainConfig(**{**two.to_dict(), "folds": (2,)}), log=crash_after_first_epoch)
    assert not (out / "fold2" / "metrics.json").exists()
    with pytest.raises(ValueError, match="--resume with other options"):
        run_cv(TrainConfig(**{**two.to_dict(), "seed": 9}), resume=True, log=lambda m: None)
    msgs = []
    run_cv(TrainConfig(**{**two.to_dict(), "folds": (2,)}), resume=True, log=msgs.append)
    assert any("resumed after epoch 1" in m for m in msgs)
    hist = [json.loads(ln) for ln in (out / "fold2" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [0, 1]
    assert (out / "fold2" / "metrics.json").exists()

    # ablation + combined report from finished runs (same run twice is enough here)
    abl = write_ablation_report(out, out, tmp_path / "abl")
    assert abl["metrics"][0]["delta (points)"] == "+0.00"
    text = write_combined_report([out], [tmp_path / "abl"], tmp_path / "all.md")
    assert "## diagnosis" in text and "Harmonisation ablation" in text
