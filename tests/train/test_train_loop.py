"""mammotrain.engine / report: every task x view x backbone sharing trains a step and
evaluates on real shards; checkpoints resume; run reports are written."""

from __future__ import annotations

import json
import math
import shutil

import pyarrow.parquet as pq
import pytest
import torch

from mammotrain.config import TrainConfig
from mammotrain.data import read_manifest
from mammotrain.engine.evaluate import write_predictions
from mammotrain.engine.fit import run_cv, train_fold
from mammotrain.schedule import build_scheduler, lr_factor


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
    from mammotrain.compare import write_ablation_report, write_combined_report

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
    assert [h["epoch"] for h in hist] == [1, 2]                 # one-based, as on screen
    metrics = strict_json(out / "fold2" / "metrics.json")
    assert metrics["selected_epoch"] in (1, 2)
    assert metrics["selection"] == "highest validation AUC (ties: lowest loss)"
    strict_json(out / "summary.json")
    md = (out / "summary.md").read_text()
    assert "## Pooled out-of-fold" in md and "95 % CI" in md

    text = write_combined_report([out], [], tmp_path / "all.md")
    assert "## diagnosis" in text and "pooled AUC" in text
    with pytest.raises(ValueError, match="same folder"):
        write_ablation_report(out, out, tmp_path / "abl")
    _ablation_against_a_known_better_run(out, tmp_path)
    _one_class_fold_is_reported_as_undefined(out, tmp_path)


def strict_json(path):
    """Parse ``path`` refusing NaN / Infinity (not JSON)."""
    def refuse(token):
        raise AssertionError(f"{path}: {token} is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def _rewrite_predictions(run, fold, fn):
    path = run / f"fold{fold}" / "predictions.parquet"
    rows = [fn(r) for r in pq.read_table(path).to_pylist()]
    write_predictions(rows, path)
    return rows


def _ablation_against_a_known_better_run(out, tmp_path):
    """The ablation of a real run against a copy whose scores are perfect: the paired test
    pairs every example and measures exactly the AUC gap."""
    from mammotrain.compare import write_ablation_report
    from mammotrain.metrics import classification_metrics
    from mammotrain.report import load_run

    harm = tmp_path / "perfect"
    shutil.copytree(out, harm)
    for f in (0, 2):
        _rewrite_predictions(harm, f, lambda r: {**r, "scores": [1.0 - r["label"],
                                                                 float(r["label"])]})
    raw_rows = load_run(out)["predictions"]
    y = [r["label"] for r in raw_rows]
    raw_auc = classification_metrics(y, [r["scores"] for r in raw_rows])["auc"]
    abl = write_ablation_report(out, harm, tmp_path / "abl")
    test = abl["paired_test"]
    assert test["n"] == len(raw_rows) and test["label_mismatches"] == 0
    assert test["bootstrap"]["b"] == 1.0
    assert test["bootstrap"]["delta"] == pytest.approx(1.0 - raw_auc)
    assert test["delong"]["auc_b"] == 1.0 and test["delong"]["auc_a"] == pytest.approx(raw_auc)
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert "paired bootstrap over patients" in md and "DeLong" in md
    assert f"{100 * (1 - raw_auc):+.2f}" in md
    strict_json(tmp_path / "abl" / "ablation.json")


def _one_class_fold_is_reported_as_undefined(out, tmp_path):
    """A fold whose test patients are all of one class has no AUC: the report says so and
    gives no fold mean (the old report printed the other fold's value as the mean)."""
    from mammotrain.metrics import classification_metrics
    from mammotrain.report import write_run_report

    run = tmp_path / "one-class"
    shutil.copytree(out, run)
    rows = _rewrite_predictions(run, 2, lambda r: {**r, "label": 0})
    m = json.loads((run / "fold2" / "metrics.json").read_text())
    m.update(classification_metrics([r["label"] for r in rows], [r["scores"] for r in rows]))
    (run / "fold2" / "metrics.json").write_text(json.dumps({k: (None if isinstance(v, float)
                                                                and v != v else v)
                                                            for k, v in m.items()}))
    summary = write_run_report(run)
    assert summary["summary"]["auc"]["mean"] is None
    assert summary["summary"]["auc"]["undefined_folds"] == [2]
    n0 = sum(r["label"] == 0 for r in rows)
    assert summary["per_fold"][1]["undefined_reason"] == f"one class only ({n0} benign)"
    md = (run / "summary.md").read_text()
    assert "undefined in 1 of 2 folds (fold 2)" in md
    assert f"one class only ({n0} benign)" in md
    strict_json(run / "summary.json")


def test_selected_epoch_is_the_argmax_of_validation_auc(train_shards, tmp_path):
    cfg = TrainConfig(task="diagnosis", views=1, shards=str(train_shards), out=str(tmp_path),
                      folds=(1,), schedule="cosine",
                      **{**TINY, "epochs": 4, "max_steps_per_epoch": 2, "lr": 1e-2})
    run_cv(cfg, log=lambda m: None, report=False)
    fold = tmp_path / "fold1"
    hist = [json.loads(ln) for ln in (fold / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    # the cosine schedule, hand-computed: lr x (1 + cos(pi e / 4)) / 2
    assert [h["lr"] for h in hist] == pytest.approx([1e-2, 8.5355339e-3, 5e-3, 1.4644661e-3])
    # selection key: validation AUC, ties broken by the lower validation loss (first of equals)
    keys = [(h["val_auc"], -h["val_loss"]) for h in hist]
    assert len(set(keys)) == len(keys), "equal selection keys: the check below would be vacuous"
    best = max(hist, key=lambda h: (h["val_auc"], -h["val_loss"]))
    metrics = strict_json(fold / "metrics.json")
    assert metrics["selected_epoch"] == best["epoch"]
    ck = torch.load(fold / "best.pt", weights_only=False)
    assert ck["epoch"] == best["epoch"]
    last = torch.load(fold / "checkpoint.pt", weights_only=False)
    same = all(torch.equal(v, last["model"][k]) for k, v in ck["model"].items())
    assert same == (best["epoch"] == 4)                 # best.pt holds the selected weights
    # the checkpoint knows the patients it has seen (predict warns about them)
    split = json.loads((fold / "split.json").read_text())
    patient = {r["key"]: r["patient"] for r in read_manifest(train_shards)}
    of = lambda uids: {patient[u.split(".")[0]] for u in uids}  # noqa: E731
    assert set(ck["seen_patients"]) == of(split["train"] + split["val"])
    assert not of(split["test"]) & set(ck["seen_patients"]) and ck["test_fold"] == 1


def test_without_validation_patients_the_last_epoch_is_used_and_said(train_shards, tmp_path):
    msgs = []
    cfg = TrainConfig(task="diagnosis", views=1, shards=str(train_shards), out=str(tmp_path),
                      folds=(1,), **{**TINY, "epochs": 2, "val_fraction": 0.0})
    run_cv(cfg, log=msgs.append)
    metrics = strict_json(tmp_path / "fold1" / "metrics.json")
    assert metrics["selection"] == "last epoch: no validation patients"
    assert metrics["selected_epoch"] == 2 and metrics["n_val"] == 0
    assert any(m.startswith("warning: fold 1: no validation patients") for m in msgs)
    assert any("(epoch 2; last epoch: no validation patients)" in m for m in msgs)
    assert any(m.startswith("AUC: ") and "pooled out-of-fold" in m and
               "warning: fold 1 had no validation patients (last epoch evaluated)" in m
               and m.endswith("is evidence of anything")  # a tiny run: under-powered
               for m in msgs)
    md = (tmp_path / "summary.md").read_text()
    assert "**Warning: under-powered:** only" in md
    assert "**Warning:** fold 1 had no validation patients" in md
    assert "selected on a patient-grouped validation split" not in md


@pytest.mark.parametrize("schedule,epochs,want", [
    ("step", 5, [1, 1, 0.1, 0.1, 0.01]),                       # step_size 2, gamma 0.1
    ("constant", 3, [1, 1, 1]),
    ("cosine", 4, [1, 0.8535533906, 0.5, 0.1464466094]),
])
def test_lr_factor_table(schedule, epochs, want):
    got = [lr_factor(schedule, e, epochs, step_size=2, gamma=0.1) for e in range(epochs)]
    assert got == pytest.approx(want)


def test_detector_keeps_its_lr_and_classification_decays():
    """Through the real scheduler: the detector's lr is still 1e-4 at epochs 90 and 399 (the
    classification StepLR(30, 0.1) had made it 1e-7); classification decays x0.1 every 30."""
    def lrs(cfg, at):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
        sched = build_scheduler(cfg, opt)
        out = {}
        for epoch in range(max(at) + 1):
            out[epoch] = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
        return [out[e] for e in at]

    det = TrainConfig(task="detection", shards="x", device="cpu").resolved()
    assert det.schedule == "constant" and det.epochs == 400
    assert lrs(det, [0, 90, 399]) == pytest.approx([1e-4, 1e-4, 1e-4])
    cos = TrainConfig(task="detection", shards="x", device="cpu", schedule="cosine").resolved()
    assert lrs(cos, [0, 200, 399]) == pytest.approx([1e-4, 5e-5, 1e-4 * 0.5 * (
        1 + math.cos(math.pi * 399 / 400))])
    cls = TrainConfig(task="diagnosis", shards="x", device="cpu").resolved()
    assert cls.schedule == "step"
    assert lrs(cls, [29, 30, 60, 99]) == pytest.approx([1e-3, 1e-4, 1e-5, 1e-6])
    with pytest.raises(ValueError, match="schedule must be"):
        TrainConfig(task="diagnosis", shards="x", schedule="linear").resolved().validate()
