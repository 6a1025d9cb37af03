"""``--views 4``: exams (CC + MLO of both breasts of one study) planned from the shard
manifest with the two-view pairing's rules, streamed from real shards (an exam across two
shards included), the four-view model's shapes and context, the per-breast loss that masks
unlabelled and missing breasts, a tiny cv run and predict with its model file."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from mammotrain.cli import main
from mammotrain.data import breast_index, plan_examples, read_manifest
from mammotrain.fourview import FourViewClassifier, breast_rows, side_present
from mammotrain.preprocess import Preprocess
from mammotrain.stream import EpochLoader, ShardStream
from mammotrain.tasks import get_task

from ..conftest import build

TINY = ["--backbone", "test_resnet", "--size", "32", "--epochs", "1", "--batch-size", "4",
        "--workers", "0", "--max-steps-per-epoch", "2", "--device", "cpu", "--gradcam", "1"]


def _row(study, lat, view, pathology="benign", fold=0, patient=None):
    from mammoprep.labels import task_labels

    labels = task_labels(pathology, "2" if pathology != "malignant" else "5", "B")
    return {"key": f"{study}_{lat}", "view": view, "laterality": lat, "study": study,
            "patient": patient or f"pat-{study}", "fold": fold, "shard": "shard-000000.tar",
            "pathology": pathology, "energy": "low", "manufacturer": "X",
            **{f"label_{k}": v for k, v in labels.items()}}


def _breast(study, lat, pathology="benign", fold=0, views=("cc", "mlo")):
    return [_row(study, lat, v, pathology, fold) for v in views]


# s1: four views, L malignant, R benign; s2: L has CC only (missing view), R benign;
# s3: only the R breast imaged; s4: L benign, R without pathology (unlabelled);
# s5: no breast labelled; s6: no fold; s7: neither breast with both views
ROWS = (_breast("s1", "L", "malignant") + _breast("s1", "R")
        + _breast("s2", "L", views=("cc",)) + _breast("s2", "R")
        + _breast("s3", "R", "malignant")
        + _breast("s4", "L") + _breast("s4", "R", None)
        + _breast("s5", "L", None) + _breast("s5", "R", None)
        + _breast("s6", "L", fold=None) + _breast("s6", "R", fold=None)
        + _breast("s7", "L", views=("mlo",)))


def _sides(e):
    return [None if s is None else (s.uid, s.label) for s in e.sides]


def test_exams_follow_the_two_view_pairing_rules():
    task = get_task("diagnosis")
    exams, rep = plan_examples(ROWS, task, 4)
    assert {e.uid: _sides(e) for e in exams} == {
        "s1": [("s1_L", 1), ("s1_R", 0)],
        "s2": [None, ("s2_R", 0)],            # a breast with one view: a missing side
        "s3": [None, ("s3_R", 1)],            # one breast imaged: the other side missing
        "s4": [("s4_L", 0), ("s4_R", -1)]}    # unlabelled breast: kept, label -1 (masked)
    assert rep.unit == "exam" and rep.candidates == 7 and rep.examples == 4
    assert rep.excluded == {"label_null": 1, "no_fold": 1, "no_breast": 1}
    assert rep.masked == {"side_missing": 2, "side_unlabelled": 1}
    assert rep.class_counts == {0: 3, 1: 2}  # labelled breasts
    assert exams[0].views == ("cc", "mlo", "cc", "mlo") and exams[0].label == 1
    # the labelled breasts are exactly the two-view examples of those exams
    two, _ = plan_examples(ROWS, task, 2)
    labelled = {u for u, b in breast_index(exams).items() if b.label >= 0}
    assert labelled == {e.uid for e in two if e.uid.split("_")[0] in {"s1", "s2", "s3", "s4"}}
    # predict: every exam with an imaged breast, without labels or folds
    exams, rep = plan_examples(ROWS, task, 4, unlabeled=True)
    assert [e.uid for e in exams] == ["s1", "s2", "s3", "s4", "s5", "s6"]
    assert rep.excluded == {"no_breast": 1}


def test_loss_masks_unlabelled_and_missing_breasts():
    torch.manual_seed(0)
    crit = get_task("diagnosis").make_criterion(32)
    logits = torch.randn(3, 2, 2, requires_grad=True)
    label = torch.tensor([[1, -1], [-1, 0], [0, 1]])
    loss = crit(logits, {"label": label})["loss"]
    loss.backward()
    keep = label >= 0
    assert torch.all(logits.grad[~keep] == 0)                # masked: no gradient at all
    assert torch.all(logits.grad[keep].abs().sum(-1) > 0)
    ref = torch.nn.functional.cross_entropy(logits[keep], label[keep])
    torch.testing.assert_close(loss, ref)
    none = crit(logits, {"label": torch.full((3, 2), -1)})["loss"]  # nothing labelled
    assert float(none.detach()) == 0.0 and none.requires_grad


@pytest.mark.parametrize("shared", [True, False])
def test_four_view_forward_shapes_and_missing_side_context(shared):
    torch.manual_seed(0)
    model = FourViewClassifier("test_resnet", 3, shared=shared).eval()
    assert len(model.backbones) == (1 if shared else 2)
    x = torch.rand(2, 4, 1, 32, 32)
    x[1, 2:] = 0  # exam 1: right side missing
    assert side_present(x).tolist() == [[True, True], [True, False]]
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 2, 3)
        f = model.forward_features(x)
        assert f.shape == (2, 4, model.feature_dim)
        own = f.reshape(2, 2, -1)
        # the left breast of exam 1 gets zeros, not the blank images' features, as context
        ref = model.head(torch.cat([own[1, 0], torch.zeros_like(own[1, 0])]))
        torch.testing.assert_close(out[1, 0], ref)
        ref = model.head(torch.cat([own[0, 0], own[0, 1]]))
        torch.testing.assert_close(out[0, 0], ref)
    with pytest.raises(ValueError, match=r"expected exam input \[B, 4, 1, H, W\]"):
        model(torch.rand(2, 2, 1, 32, 32))


def test_breast_rows_drop_missing_and_unlabelled_sides():
    logits = torch.arange(12.0).reshape(3, 2, 2)
    batch = {"label": torch.tensor([[1, -1], [-1, -1], [0, 1]]),
             "sides": [["a_L", "a_R"], ["", "b_R"], ["c_L", "c_R"]]}
    lg, lab, uids = breast_rows(logits, batch, keep_unlabelled=False)
    assert uids == ["a_L", "c_L", "c_R"] and lab.tolist() == [1, 0, 1]
    assert lg.tolist() == [[0, 1], [8, 9], [10, 11]]
    _, lab, uids = breast_rows(logits, batch, keep_unlabelled=True)
    assert uids == ["a_L", "a_R", "b_R", "c_L", "c_R"] and lab.tolist() == [1, -1, -1, 0, 1]


@pytest.fixture(scope="module")
def odd_shards(tmp_path_factory):
    """The train_shards cohort in shards of 3 breasts: exams straddle shard boundaries."""
    return build(tmp_path_factory.getbasetemp(), "train-shards-per3", 24, 0, 48, per_shard=3)


def test_stream_assembles_exams_across_shards_like_two_view(odd_shards):
    rows = read_manifest(odd_shards)
    task = get_task("density")
    exams, _ = plan_examples(rows, task, 4, unlabeled=True)
    across = [e for e in exams if len(e.shards) == 2]
    assert across, "the fixture should put some exams across two shards"
    missing = [e for e in exams if None in e.sides]
    prep = Preprocess(size=32)
    pairs, _ = plan_examples(rows, task, 2, unlabeled=True)
    two = {}
    for b in EpochLoader(ShardStream(odd_shards, pairs, prep, train=False), 64):
        two.update({u: img for u, img in zip(b["uid"], b["image"])})
    # two workers split the shards: an exam across shards is read once, and whole
    loader = EpochLoader(ShardStream(odd_shards, exams, prep, train=False), 5, workers=2)
    seen = []
    for b in loader:
        assert b["image"].shape[1:] == (4, 1, 32, 32) and b["label"].shape[1] == 2
        for uid, img, sides, lab in zip(b["uid"], b["image"], b["sides"], b["label"]):
            seen.append(uid)
            for j, s in enumerate(sides):
                if s:  # the breast's CC and MLO exactly as two-view streams them
                    torch.testing.assert_close(img[2 * j:2 * j + 2], two[s], rtol=0, atol=0)
                else:  # missing side: zero images, label -1
                    assert float(img[2 * j:2 * j + 2].abs().max()) == 0 and int(lab[j]) == -1
    assert sorted(seen) == sorted(e.uid for e in exams)
    assert set(seen) >= {e.uid for e in across + missing}


def test_cv_and_predict_with_four_views(train_shards, tmp_path):
    out = tmp_path / "v4"
    r = CliRunner().invoke(main, ["cv", "--task", "diagnosis", "--views", "4", "--shards",
                                  str(train_shards), "--out", str(out), "--folds", "0",
                                  *TINY])
    assert r.exit_code == 0, r.output
    assert "exams of" in r.output and "no Grad-CAM figure for four-view exams" in r.output
    assert (out / "summary.md").exists() and "4-view" in (out / "summary.md").read_text()
    exams, _ = plan_examples(read_manifest(train_shards), get_task("diagnosis"), 4)
    labelled = {u: b for u, b in breast_index(exams).items() if b.label >= 0}
    for f in (0,):  # per-breast rows: the labelled breasts of the test fold's exams
        rows = pq.read_table(out / f"fold{f}" / "predictions.parquet").to_pylist()
        want = {u for u, b in labelled.items() if b.fold == f}
        assert {r["uid"] for r in rows} == want
        assert all(r["view"] == "cc+mlo" and r["label"] == labelled[r["uid"]].label
                   for r in rows)
        m = json.loads((out / f"fold{f}" / "metrics.json").read_text())
        assert m["n_test_breasts"] == len(want)
    pred = tmp_path / "p.parquet"
    r = CliRunner().invoke(main, ["predict", "-c", str(out / "fold0" / "best.safetensors"),
                                  "--shards", str(train_shards), "-o", str(pred),
                                  "--device", "cpu"])
    assert r.exit_code == 0, r.output
    rows = pq.read_table(pred).to_pylist()
    every, _ = plan_examples(read_manifest(train_shards), get_task("diagnosis"), 4,
                             unlabeled=True)
    imaged = breast_index(every)
    assert {r["uid"] for r in rows} == set(imaged)  # every imaged breast, labelled or not
    assert {r["uid"]: r["label"] for r in rows} == {u: b.label for u, b in imaged.items()}
    assert json.loads(pred.with_suffix(".metrics.json").read_text())["n"] == len(labelled)
    r = CliRunner().invoke(main, ["cv", "--task", "diagnosis", "--views", "3", "--shards",
                                  str(train_shards), "--out", str(tmp_path / "v3"), *TINY])
    assert r.exit_code == 2 and "'3' is not one of '1', '2', '4'" in r.output
    r = CliRunner().invoke(main, ["cv", "--task", "detection", "--views", "4", "--shards",
                                  str(train_shards), "--out", str(tmp_path / "d4"), *TINY])
    assert r.exit_code != 0 and "views must be 1 for task detection" in r.output
