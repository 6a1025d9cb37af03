"""`mammotrain compare RUN... -o DIR`: the one results table (results.md / .png / .json) over
tiny real cross-validation runs; its cells are the runs' own summary values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mammotrain.cli import main
from mammotrain.config import TrainConfig
from mammotrain.detection_metrics import (ap_recall, average_precision, detection_metrics,
                                          match_detections)
from mammotrain.engine.fit import run_cv
from mammotrain.report import ci_text

from ..conftest import build

TINY = dict(backbone="test_resnet", size=32, epochs=1, batch_size=4, workers=0,
            max_steps_per_epoch=1, gradcam=0, device="cpu", val_fraction=0.25)


@pytest.fixture(scope="module")
def runs(train_shards, train_shards_harmonized, tmp_path_factory):
    """Tiny cv runs: diagnosis two-view raw + harmonised (a pair), density two-view
    harmonised only, detection on shards without a reference (raw only)."""
    root = tmp_path_factory.mktemp("results-runs")
    det_shards = build(tmp_path_factory.getbasetemp(), "det-shards", 40, 0, 128, folds=3,
                       per_shard=16, synth_size="256x208", labels="csv")
    specs = {"diag-raw": ("diagnosis", 2, train_shards, (0, 1)),
             "diag-harm": ("diagnosis", 2, train_shards_harmonized, (0, 1)),
             "density-harm": ("density", 2, train_shards_harmonized, (0,)),
             "det": ("detection", 1, det_shards, (1,))}
    for name, (task, views, shards, folds) in specs.items():
        extra = {"patience": 1} if task == "detection" else {}
        run_cv(TrainConfig(task=task, views=views, shards=str(shards), out=str(root / name),
                           folds=folds, **TINY, **extra), log=lambda m: None)
    return root


def _table(md: str, section: str) -> dict[str, list[str]]:
    """Rows of the table under ``## section``: first cell (task) + views -> cells."""
    lines = md.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines
            if ln.startswith("| ") and not ln.startswith("| Task")]
    return {f"{r[0]} {r[1]}": r for r in rows}


def _summary_cells(run, metrics):
    pooled = json.loads((run / "summary.json").read_text())["pooled"]["values"]
    return [ci_text(pooled[m], label=False) for m in metrics]


def test_compare_writes_one_table_equal_to_the_run_summaries(runs, tmp_path):
    order = [runs / "det", runs / "density-harm", runs / "diag-harm", runs / "diag-raw",
             tmp_path / "never-ran"]
    r = CliRunner().invoke(main, ["compare", *map(str, order), "-o", str(tmp_path / "res")])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "res" / "results.md").read_text()
    cls = _table(md, "Classification")
    assert list(cls) == ["Diagnosis two", "Density two"]          # the paper's order
    diag, dens = cls["Diagnosis two"], cls["Density two"]
    assert diag[2:4] == ["test_resnet", "32²"]
    # raw ACC, AUC, F1 then harmonised ACC, AUC, F1: the runs' pooled values and CIs
    assert diag[4:7] == _summary_cells(runs / "diag-raw", ("acc", "auc", "f1"))
    assert diag[7:10] == _summary_cells(runs / "diag-harm", ("acc", "auc", "f1"))
    assert all("(" in c for c in diag[4:10]), diag             # each with its interval
    assert dens[4:7] == ["—"] * 3 and dens[10] == "—"          # no raw twin: no p
    assert dens[7:10] == _summary_cells(runs / "density-harm", ("acc", "auc", "f1"))
    det = _table(md, "Detection")["Detection (DETR) single"]
    assert det[4:7] == _summary_cells(runs / "det", ("map50", "map25", "recall25"))
    assert det[7:11] == ["—"] * 4
    assert "never-ran" in md and "(left out)" in md
    fold_means = _table(md, "Mean ± std over test folds (the paper's statistic, %)")
    harm_auc = json.loads((runs / "diag-harm" / "summary.json").read_text())["summary"]["auc"]
    assert fold_means["Diagnosis two"][8] == f"{100 * harm_auc['mean']:.2f} ± " \
                                             f"{100 * harm_auc['std']:.2f}"
    png = (tmp_path / "res" / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    doc = json.loads((tmp_path / "res" / "results.json").read_text(),
                     parse_constant=lambda t: pytest.fail(f"{t} in results.json"))
    assert [row["task"] for row in doc["rows"]] == ["diagnosis", "density", "detection"]

    # the p-value is the ablation's paired test: two runs of one configuration also get
    # ablation.md, raw found by its shards whatever the order given
    r = CliRunner().invoke(main, ["compare", str(runs / "diag-harm"), str(runs / "diag-raw"),
                                  "-o", str(tmp_path / "pair")])
    assert r.exit_code == 0, r.output
    abl = json.loads((tmp_path / "pair" / "ablation.json").read_text())["paired_test"]
    p = abl["bootstrap"]["p"]
    assert diag[10] == ("< 0.001" if p < 0.001 else f"{p:.3f}")
    assert abl["bootstrap"]["a"] == pytest.approx(
        json.loads((runs / "diag-raw" / "summary.json").read_text())["pooled"]["values"]
        ["auc"]["value"])
    assert _table((tmp_path / "pair" / "results.md").read_text(),
                  "Classification")["Diagnosis two"][10] == diag[10]


def test_compare_without_finished_runs_is_an_error(tmp_path):
    r = CliRunner().invoke(main, ["compare", str(tmp_path), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and "no run with a finished fold" in r.output


def _random_detections(seed, n):
    """n images, 0-2 lesions each, 3 valid boxes per image (some near a lesion)."""
    rng = np.random.default_rng(seed)
    boxes, scores, gts = [], [], []
    for _ in range(n):
        g = [[x, y, x + rng.uniform(5, 20), y + rng.uniform(5, 20)]
             for x, y in rng.uniform(0, 80, (rng.integers(0, 3), 2))]
        p = []
        for _ in range(3):
            c = (np.asarray(g[rng.integers(len(g))]) + rng.normal(0, 3, 4) if g and
                 rng.random() < 0.5 else np.r_[rng.uniform(0, 80, 2), 0, 0] + [0, 0, 10, 10])
            p.append([min(c[0], c[2]), min(c[1], c[3]), max(c[0], c[2]), max(c[1], c[3])])
        boxes.append(np.asarray(p))
        scores.append(rng.random(3))
        gts.append(np.asarray(g).reshape(-1, 4))
    return boxes, scores, gts


def test_weighted_detection_values_equal_repeated_images():
    """The bootstrap's re-weighting of images gives the AP and recall of the image list
    with each image repeated as often as its weight; unweighted, the library's values."""
    boxes, scores, gts = _random_detections(1, 120)
    w = np.random.default_rng(2).integers(0, 3, len(boxes))
    rep = [i for i in range(len(boxes)) for _ in range(w[i])]
    for iou in (0.5, 0.25):
        ap, rec = ap_recall(match_detections(boxes, scores, gts, iou), w)
        assert ap == pytest.approx(average_precision([boxes[i] for i in rep],
                                                     [scores[i] for i in rep],
                                                     [gts[i] for i in rep], iou))
        assert 0 < rec <= 1
    lib = detection_metrics(boxes, scores, gts)
    m25 = match_detections(boxes, scores, gts, 0.25)
    assert ap_recall(m25)[0] == pytest.approx(lib["map25"], abs=1e-6)
    assert ap_recall(m25)[1] == pytest.approx(lib["recall25"], abs=1e-6)
