"""``--split official``: the publisher's train/test split as one test fold
(:mod:`mammotrain.splits`, :func:`mammotrain.data.regroup_folds`), the generic label table's
``split`` column, and ``mammotrain cv --split official`` end to end on tiny shards."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from click.testing import CliRunner

from mammoprep.labels import table as generic_table
from mammoprep.labels._common import LabelError
from mammotrain.cli import main
from mammotrain.data import plan_examples, regroup_folds, split_examples
from mammotrain.report import split_note
from mammotrain.tasks import get_task

from .test_train_cli import TINY
from ..conftest import mammoprep


def _row(patient, side, view, split, pathology="benign", fold=0):
    from mammoprep.labels import task_labels

    labels = task_labels(pathology, "2", "B")
    return {"key": f"{patient}_{side}", "view": view, "patient": patient, "fold": fold,
            "shard": "shard-000000.tar", "energy": "low", "manufacturer": "X", "split": split,
            **{f"label_{k}": v for k, v in labels.items()}}


def _breast(patient, side, split, pathology="benign", fold=0):
    return [_row(patient, side, v, split, pathology, fold) for v in ("cc", "mlo")]


# train part: t1..t6 (benign and malignant); test part: s1, s2 and x's right breast;
# x's left breast is in the train part (a patient in both parts); n1 has no split;
# t6 has no fold (the official split does not use folds)
ROWS = (_breast("t1", "L", "train") + _breast("t2", "L", "train", "malignant")
        + _breast("t3", "L", "training") + _breast("t4", "R", "train", "malignant")
        + _breast("t5", "L", "train") + _breast("t6", "R", "train", "malignant", fold=None)
        + _breast("s1", "L", "test") + _breast("s2", "R", "test", "malignant")
        + _breast("x", "R", "test", "malignant") + _breast("x", "L", "train")
        + _breast("n1", "L", None))


def _official(rows, views=1):
    ex, plan = plan_examples(rows, get_task("diagnosis"), views, need_fold=False)
    return ex, plan, regroup_folds(ex, plan, "fold", "official")


def test_official_split_is_one_test_fold_without_leaks():
    ex, plan, got = _official(ROWS)
    assert plan.split == "official" and plan.fold_names == {0: "test"}
    assert {e.uid for e in got if e.fold == 0} == {
        f"{k}.{v}" for k in ("s1_L", "s2_R", "x_R") for v in ("cc", "mlo")}
    assert {e.patient for e in got if e.fold == 1} == {f"t{i}" for i in range(1, 7)}
    # n1 (no split) and x's training breast are excluded and counted
    assert plan.excluded == {"no_split": 2, "train_of_test_patient": 2}
    assert plan.patients_in_both == 1 and plan.examples == len(got) == len(ex) - 4
    assert "official split" in plan.describe() and "1 patient in both parts" in plan.describe()
    sp = split_examples(got, 0, 0.34, seed=0)
    assert {e.uid for e in sp.test} == {e.uid for e in got if e.fold == 0}
    val, train = {e.patient for e in sp.val}, {e.patient for e in sp.train}
    assert val and train and not val & train
    assert val | train == {f"t{i}" for i in range(1, 7)}  # carved from the train part only
    assert "x" not in val | train
    note = split_note(plan.to_dict())  # the ablation report's line
    assert note.startswith("; official split: trained on the publisher's train part")


def test_official_split_two_view_needs_both_views_to_agree():
    rows = ROWS[:2] + [_row("s9", "L", "cc", "test"), _row("s9", "L", "mlo", "train")]
    ex, plan = plan_examples(rows + _breast("s1", "L", "test"), get_task("diagnosis"), 2)
    assert {e.uid: e.split for e in ex} == {"t1_L": "train", "s9_L": None, "s1_L": "test"}
    got = regroup_folds(ex, plan, "fold", "official")
    assert plan.excluded["no_split"] == 1 and [e.uid for e in got] == ["s1_L", "t1_L"]


def test_official_split_refusals():
    ex, plan = plan_examples([dict(r, split=None) for r in ROWS], get_task("diagnosis"), 1,
                             need_fold=False)
    with pytest.raises(ValueError, match="none of the 22 images has an official split.*"
                                         "default patient-level k-fold"):
        regroup_folds(ex, plan, "fold", "official")
    ex, plan = plan_examples([r for r in ROWS if r["split"] != "test"], get_task("diagnosis"),
                             1)
    with pytest.raises(ValueError, match="official test part has no image"):
        regroup_folds(ex, plan, "fold", "official")
    with pytest.raises(ValueError, match="official with split_by 'fold' only"):
        regroup_folds(ex, plan, "vendor", "official")
    # k-fold stays the default: the manifest's folds, the split column ignored
    ex, plan = plan_examples(ROWS, get_task("diagnosis"), 1)
    assert regroup_folds(ex, plan, "fold") == ex and plan.split == "kfold"
    assert plan.excluded == {"no_fold": 2}


def test_generic_table_split_column(tmp_path):
    assert [generic_table.parse_split(v) for v in ("Train", " training", "TEST", "", "NA")] \
        == ["train", "train", "test", None, None]
    with pytest.raises(LabelError, match="not an official split"):
        generic_table.parse_split("validation", "t.csv:2")
    (tmp_path / "t.csv").write_text("path,split\na.dcm,Training\nb.dcm,test\nc.dcm,val\n"
                                    "d.dcm,\n")
    t = generic_table.load(str(tmp_path / "t.csv"))
    assert {k.rsplit("/", 1)[-1]: r.split for k, r in t.by_path.items()} == {
        "a.dcm": "train", "b.dcm": "test", "c.dcm": None, "d.dcm": None}
    assert t.dropped["split"]["count"] == 1
    with pytest.raises(LabelError, match="not an official split"):
        generic_table.load(str(tmp_path / "t.csv"), strict=True)


# ------------------------------------------------------------------------------ CLI

#: synth patient -> official split in the label table ('L' / 'R': per breast)
SPLIT = {"B0001": "test", "M0002": "test", "B0003": None, "M0001": {"L": "train", "R": "test"},
         "B0002": "train", "B0004": "train", "M0003": "train", "M0004": "train"}


@pytest.fixture(scope="module")
def official_shards(tmp_path_factory):
    """8 synthetic patients sharded with a generic table carrying ``split`` (:data:`SPLIT`)."""
    root = tmp_path_factory.mktemp("official")
    cohort, table = root / "cohort", root / "labels_split.csv"
    mammoprep("synth", str(cohort), "--patients", "8", "--seed", "1", "--size", "256x208",
              "-j", "1")
    with open(cohort / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "patient", "laterality", "view",
                                          "pathology", "birads", "density", "split"])
        w.writeheader()
        for r in rows:
            s = SPLIT[r["patient"]]
            w.writerow({"path": str(cohort / r["path"]), "split": (
                s[r["laterality"]] if isinstance(s, dict) else s) or "",
                **{k: r[k] for k in ("patient", "laterality", "view", "pathology", "birads",
                                     "density")}})
    out = root / "shards"
    mammoprep("shard", str(cohort), "-o", str(out), "--labels", f"csv:{table}", "--size", "64",
              "--samples-per-shard", "8", "--folds", "2", "-j", "1")
    return out


def test_cv_official_split(official_shards, tmp_path):
    """`cv --split official`: one test fold whose predictions are exactly the manifest's
    test images; the leaking patient's training images are used nowhere; the log,
    split.json and the reports name the split."""
    import pyarrow.parquet as pq

    rows = pq.read_table(official_shards / "images.parquet").to_pylist()
    uid = {id(r): f"{r['key']}.{r['view']}" for r in rows}
    test = {uid[id(r)] for r in rows if r["split"] == "test"}
    by_patient: dict[str, set] = {}
    for r in rows:
        by_patient.setdefault(r["patient"], set()).add(r["split"])
    leak = [p for p, s in by_patient.items() if s == {"train", "test"}]
    assert len(test) == 10 and len(leak) == 1  # B0001, M0002, M0001 R; M0001
    leaked = {uid[id(r)] for r in rows if r["patient"] == leak[0] and r["split"] == "train"}
    out = tmp_path / "official"
    r = CliRunner().invoke(main, ["cv", "--task", "diagnosis", "--views", "1", "--shards",
                                  str(official_shards), "--out", str(out), "--split",
                                  "official", "--val-fraction", "0.5", *TINY])
    assert r.exit_code == 0, r.output
    assert "[test: official split test]" in r.output
    assert "no_split 4" in r.output and "train_of_test_patient 2" in r.output
    assert "on the official test part (--split official)" in r.output
    assert sorted(p.name for p in out.glob("fold*")) == ["fold0"]
    preds = pq.read_table(out / "fold0" / "predictions.parquet").to_pylist()
    assert {p["uid"] for p in preds} == test and len(preds) == len(test)
    split = json.loads((out / "fold0" / "split.json").read_text())
    assert split["split"] == "official" and set(split["test"]) == test
    assert split["val"] and not leaked & set(split["train"] + split["val"])
    # every labelled image of the train part (4 patients; a BI-RADS 0 breast has no
    # diagnosis label), the leaking patient's excluded
    train_part = {uid[id(r)] for r in rows if r["split"] == "train"
                  and r["label_diagnosis"] is not None and r["patient"] != leak[0]}
    assert len(train_part) >= 12 and set(split["train"] + split["val"]) == train_part
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"] == "official" and summary["per_fold"][0]["test_group"] == "test"
    md = (out / "summary.md").read_text()
    assert "**Official split** (`--split official`)" in md and "| test split |" in md
    assert "1 patient in both parts" in md


def test_cv_official_split_refusals(official_shards, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    r = CliRunner().invoke(main, ["cv", "--task", "diagnosis", "--shards", str(official_shards),
                                  "--out", str(tmp_path / "o"), "--split", "official",
                                  "--split-by", "vendor", *TINY])
    assert r.exit_code == 2, r.output
    assert "--split official is its own test set" in r.output
    r = CliRunner().invoke(main, ["ablation", "--task", "diagnosis", "--raw-shards",
                                  str(official_shards), "--harmonized-shards",
                                  str(official_shards), "--out", str(tmp_path / "a"),
                                  "--split", "official", "--split-by", "energy", *TINY])
    assert r.exit_code == 2 and "does not combine with --split-by energy" in r.output
    bare = tmp_path / "no-split"  # the same shards, as if sharded without a split
    shutil.copytree(official_shards, bare)
    t = pq.read_table(bare / "images.parquet")
    t = t.set_column(t.schema.get_field_index("split"), "split", pa.nulls(len(t), pa.string()))
    pq.write_table(t, bare / "images.parquet")
    r = CliRunner().invoke(main, ["cv", "--task", "diagnosis", "--views", "1", "--shards",
                                  str(bare), "--out", str(tmp_path / "o"), "--split",
                                  "official", *TINY])
    assert r.exit_code == 1, r.output
    assert "has an official split" in r.output and "default patient-level k-fold" in r.output
