"""`mammotrain` CLI through click's CliRunner: validation (exit 2 with the message) and the
cv / report / ablation / combine commands on real shards."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mammotrain.cli import main


TINY = ["--backbone", "test_resnet", "--size", "32", "--epochs", "1", "--batch-size", "4",
        "--workers", "0", "--max-steps-per-epoch", "1", "--device", "cpu", "--gradcam", "1"]


@pytest.mark.parametrize("args,message", [
    (["--task", "cancer"], "unknown task 'cancer'; known tasks: diagnosis, birads2"),
    (["--task", "density", "--backbone", "resnet5000"], "Unknown model 'resnet5000'"),
    (["--task", "density", "--folds", "a,b"], "expected comma-separated fold numbers"),
    (["--task", "density", "--views", "3"], "'3' is not one of '1', '2', '4'"),
])
def test_bad_options_exit_2_with_a_message(tmp_path, args, message):
    r = CliRunner().invoke(main, ["cv", "--shards", str(tmp_path), "--out", str(tmp_path / "o"),
                                  *args])
    assert r.exit_code == 2, r.output
    assert message in r.output


def test_missing_manifest_is_a_one_line_error(tmp_path):
    r = CliRunner().invoke(main, ["cv", "--task", "density", "--shards", str(tmp_path),
                                  "--out", str(tmp_path / "o"), *TINY])
    assert r.exit_code == 1
    assert "images.parquet: manifest not found" in r.output


def test_cv_report_and_combine(train_shards, tmp_path):
    out = tmp_path / "density"
    r = CliRunner().invoke(main, ["cv", "--task", "density", "--views", "2", "--shards",
                                  str(train_shards), "--out", str(out), "--folds", "3",
                                  "--independent", *TINY])
    assert r.exit_code == 0, r.output
    assert "fold 3 test" in r.output
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["shared"] is False and cfg["folds"] == [3] and cfg["task"] == "density"
    md = (out / "summary.md").read_text()
    assert "macro-AUC" in md and "macro-F1" in md
    (out / "summary.md").unlink()
    r = CliRunner().invoke(main, ["report", str(out)])
    assert r.exit_code == 0 and (out / "summary.md").exists()
    r = CliRunner().invoke(main, ["combine", str(out), "-o", str(tmp_path / "all.md")])
    assert r.exit_code == 0 and "## density" in (tmp_path / "all.md").read_text()


def test_cv_leave_one_vendor_out(train_shards, tmp_path):
    """`cv --split-by vendor`: one test fold per manufacturer, named in the log, split.json
    and the report; each fold's test predictions are that vendor's images only."""
    import pyarrow.parquet as pq

    out = tmp_path / "lovo"
    r = CliRunner().invoke(main, ["cv", "--task", "density", "--views", "1", "--shards",
                                  str(train_shards), "--out", str(out), "--split-by",
                                  "vendor", "--folds", "0,1", *TINY])
    assert r.exit_code == 0, r.output
    plan = json.loads((out / "config.json").read_text())["plan"]
    names = plan["fold_names"]
    assert plan["split_by"] == "vendor" and len(names) >= 3
    for k in (0, 1):
        split = json.loads((out / f"fold{k}" / "split.json").read_text())
        assert split["test_group"] == names[str(k)]
        assert f"[test: vendor {names[str(k)]}]" in r.output
        preds = pq.read_table(out / f"fold{k}" / "predictions.parquet").to_pylist()
        assert preds and {p["manufacturer"] for p in preds} == {names[str(k)]}
        assert not set(split["train"]) & set(split["test"])
    md = (out / "summary.md").read_text()
    assert "Leave one vendor out" in md and f"fold 1 = {names['1']}" in md
    assert json.loads((out / "summary.json").read_text())["per_fold"][0]["test_group"] == \
        names["0"]
    import shutil

    shutil.copytree(out, tmp_path / "lovo2")  # compare refuses one folder twice
    r = CliRunner().invoke(main, ["compare", str(out), str(tmp_path / "lovo2"), "-o",
                                  str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert f"leave one vendor out (fold 0 = {names['0']}" in (
        tmp_path / "c" / "ablation.md").read_text()


def test_ablation_raw_vs_harmonized(train_shards, train_shards_harmonized, tmp_path):
    out = tmp_path / "abl"
    r = CliRunner().invoke(main, ["ablation", "--raw-shards", str(train_shards),
                                  "--harmonized-shards", str(train_shards_harmonized),
                                  "--task", "diagnosis", "--views", "2", "--out", str(out),
                                  "--folds", "0,1", *TINY])
    assert r.exit_code == 0, r.output
    md = (out / "ablation.md").read_text()
    assert "| metric | raw | harmonised | delta (points) |" in md
    assert "Energy-wise AUC" in md and (out / "ablation_roc.png").exists()
    # the paired test pairs the runs' test predictions of the same breasts (same keys: same
    # cohort, same salt), whatever the scores are
    import pyarrow.parquet as pq

    test = json.loads((out / "ablation.json").read_text())["paired_test"]
    from sklearn.metrics import roc_auc_score

    raw = [r for f in (0, 1) for r in
           pq.read_table(out / "raw" / f"fold{f}" / "predictions.parquet").to_pylist()]
    assert test["n"] == len(raw) > 0 and test["label_mismatches"] == 0
    auc = roc_auc_score([r["label"] for r in raw], [r["score"] for r in raw])
    assert test["delong"]["auc_a"] == pytest.approx(auc)
    assert test["bootstrap"]["a"] == pytest.approx(auc)
    assert "## Paired test of the pooled out-of-fold AUC" in md
    raw = json.loads((out / "raw" / "config.json").read_text())["config"]
    harm = json.loads((out / "harmonized" / "config.json").read_text())["config"]
    assert raw["shards"] == str(train_shards) and harm["shards"] == str(train_shards_harmonized)
    assert {k: v for k, v in raw.items() if k not in ("shards", "out")} == \
        {k: v for k, v in harm.items() if k not in ("shards", "out")}
