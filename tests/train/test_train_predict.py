"""`mammotrain predict` through the CLI on real shards and real DICOM copies: rows that join
back to the user's files (path + SOP Instance UID read with pydicom), several --dicom paths,
rejects with their reasons, single-view models without View Position (scores equal to the
shard route's), --labels supplying views, and the warning for training patients."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pydicom
import pytest
import torch
from click.testing import CliRunner

from mammotrain.cli import main


TINY = ["--backbone", "test_resnet", "--size", "32", "--epochs", "1", "--batch-size", "4",
        "--workers", "0", "--max-steps-per-epoch", "1", "--device", "cpu", "--gradcam", "0"]


@pytest.fixture(scope="module")
def models(train_shards, tmp_path_factory) -> dict[int, str]:
    """Diagnosis checkpoints (1- and 2-view) trained with fold 0 as the test fold."""
    root = tmp_path_factory.mktemp("predict-models")
    out = {}
    for views in (1, 2):
        r = CliRunner().invoke(main, ["cv", "--task", "diagnosis", "--views", str(views),
                                      "--shards", str(train_shards), "--out",
                                      str(root / f"v{views}"), "--folds", "0", *TINY])
        assert r.exit_code == 0, r.output
        out[views] = str(root / f"v{views}" / "fold0" / "best.pt")
    return out


def _cohort(train_shards):
    return next(train_shards.parent.glob("cohort-24-0-*"))


def _no_view(src, dst):
    """Copies of ``src``'s DICOMs without (0018,5101) View Position or View Code Sequence,
    as RSNA's files come."""
    dst.mkdir(parents=True)
    for f in sorted(src.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        for tag in ("ViewPosition", "ViewCodeSequence"):
            if tag in ds:
                delattr(ds, tag)
        ds.save_as(dst / f.name)
    return dst


def _predict(*args):
    return CliRunner().invoke(main, ["predict", *map(str, args), "--device", "cpu"])


def test_dicom_rows_join_back_and_rejects_are_listed(train_shards, models, tmp_path):
    cohort = _cohort(train_shards)
    folder = sorted((cohort / "Malign").iterdir())[0]
    other = sorted((cohort / "Benign").iterdir())[0]
    junk = tmp_path / "notes.dcm"
    junk.write_text("not a DICOM file")
    out = tmp_path / "p.parquet"
    # several paths: a folder, then two files of another patient after one --dicom
    r = _predict("-c", models[2], "--dicom", folder, other / "L_CC.dcm", other / "L_MLO.dcm",
                 "--dicom", junk, "-o", out)
    assert r.exit_code == 0, r.output
    assert "1 of 7 inputs not predicted" in r.output and str(junk) in r.output
    rejects = (tmp_path / "p.rejects.csv").read_text()
    assert str(junk) in rejects and "not_dicom" in rejects
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 3                                   # L + R of folder, L of other
    files = set()
    for row in rows:
        cc, mlo = pydicom.dcmread(row["path"]), pydicom.dcmread(row["path_mlo"])
        assert row["sop_instance_uid"] == cc.SOPInstanceUID and cc.ViewPosition == "CC"
        assert row["sop_instance_uid_mlo"] == mlo.SOPInstanceUID and mlo.ViewPosition == "MLO"
        assert cc.ImageLaterality == mlo.ImageLaterality == row["key"][-1]
        files |= {row["path"], row["path_mlo"]}
    assert files == {str(p) for p in folder.glob("*.dcm")} | {
        str(other / "L_CC.dcm"), str(other / "L_MLO.dcm")}


def test_single_view_model_needs_no_view_position(train_shards, models, tmp_path):
    cohort = _cohort(train_shards)
    patient = sorted((cohort / "Malign").iterdir())[1]
    bare = _no_view(patient, tmp_path / "bare")
    out = tmp_path / "sv.parquet"
    r = _predict("-c", models[1], "--dicom", bare, "-o", out)
    assert r.exit_code == 0, r.output
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 4 and {row["view"] for row in rows} == {"unknown"}
    for row in rows:
        assert row["sop_instance_uid"] == pydicom.dcmread(row["path"]).SOPInstanceUID
    # the same images through the training shards: the same model input, the same scores
    r = _predict("-c", models[1], "--shards", train_shards, "-o", tmp_path / "sh.parquet")
    assert r.exit_code == 0, r.output
    by_hash = {row["sop_uid_hash"]: row for row in pq.read_table(tmp_path / "sh.parquet")
               .to_pylist()}
    for row in rows:
        assert row["scores"] == pytest.approx(by_hash[row["sop_uid_hash"]]["scores"], abs=1e-5)
    # labels from a table (no view in it): rows carry them, metrics are written
    table = tmp_path / "labels.csv"
    table.write_text("path,pathology,birads\n" + "".join(
        f"bare/{f.name},{'malignant' if f.name[0] == 'L' else 'benign'},"
        f"{'5' if f.name[0] == 'L' else '2'}\n" for f in sorted(bare.glob("*.dcm"))))
    out = tmp_path / "lab.parquet"
    r = _predict("-c", models[1], "--dicom", bare, "--labels", f"csv:{table}", "-o", out)
    assert r.exit_code == 0, r.output
    rows = pq.read_table(out).to_pylist()
    assert {row["path"].split("/")[-1]: row["label"] for row in rows} == {
        f.name: int(f.name[0] == "L") for f in bare.glob("*.dcm")}
    assert json.loads(out.with_suffix(".metrics.json").read_text())["n"] == len(rows)


def test_two_view_model_takes_views_from_labels(train_shards, models, tmp_path, monkeypatch):
    cohort = _cohort(train_shards)
    patient = sorted((cohort / "Benign").iterdir())[1]
    bare = _no_view(patient, tmp_path / "bare")
    r = _predict("-c", models[2], "--dicom", bare, "-o", tmp_path / "x.parquet")
    n = len(list(bare.glob("*.dcm")))
    assert r.exit_code == 1
    assert f"{n} of {n} inputs not predicted: view_not_stored {n}" in r.output
    assert "nothing to predict" in r.output and "--labels" in r.output
    table = tmp_path / "views.csv"
    table.write_text("path,laterality,view\n" + "".join(
        f"bare/{f.name},{f.name[0]},{f.stem.split('_')[1]}\n" for f in sorted(bare.glob("*.dcm"))))
    out = tmp_path / "y.parquet"
    import mammoprep.labels

    import mammotrain.dicom_input
    import mammotrain.engine.inference

    loads, load = [], mammoprep.labels.load_labels
    for module in (mammoprep.labels, mammotrain.dicom_input):
        monkeypatch.setattr(module, "load_labels",
                            lambda *a, **k: loads.append(a[0]) or load(*a, **k))
    reads, read = [], mammotrain.dicom_input.read_checkpoint
    for module in (mammotrain.dicom_input, mammotrain.engine.inference):
        monkeypatch.setattr(module, "read_checkpoint",
                            lambda *a, **k: reads.append(a[0]) or read(*a, **k))
    r = _predict("-c", models[2], "--dicom", bare, "--labels", f"csv:{table}", "-o", out)
    assert r.exit_code == 0, r.output
    assert loads == [f"csv:{table}"]  # read once (a CBIS-DDSM table opens every ROI mask)
    assert reads == [models[2]]        # and the checkpoint once
    rows = pq.read_table(out).to_pylist()
    breasts = ({f.name[0] for f in bare.glob("*_CC.dcm")}
               & {f.name[0] for f in bare.glob("*_MLO.dcm")})
    assert len(rows) == len(breasts) >= 1 and all(row["path"].endswith("_CC.dcm") and
                                  row["path_mlo"].endswith("_MLO.dcm") for row in rows)
    single = n - 2 * len(breasts)                           # a breast with one view only
    assert (f"one_view {single}" in r.output) if single else "one_view" not in r.output
    r = _predict("-c", models[2], "--shards", train_shards, "--labels", f"csv:{table}",
                 "-o", out)
    assert r.exit_code == 2 and "--labels, --ref and --shard-size go with --dicom" in r.output


def test_predicting_training_patients_warns(train_shards, models, tmp_path):
    from mammotrain.data import read_manifest

    rows = read_manifest(train_shards)
    ck = torch.load(models[1], weights_only=False)
    # the patients fold 0's model has seen: the labelled ones of the other folds
    seen = {r["patient"] for r in rows if r["fold"] != 0 and r["label_diagnosis"] is not None}
    assert set(ck["seen_patients"]) == seen
    r = _predict("-c", models[1], "--shards", train_shards, "-o", tmp_path / "w.parquet")
    assert r.exit_code == 0, r.output
    everyone = {r_["patient"] for r_ in rows}
    assert (f"warning: {len(seen)} of {len(everyone)} patients in {train_shards} were in the "
            "training or validation split of this checkpoint (test fold 0)") in r.output
    # only fold-0 (held-out) images: no warning
    held_out = tmp_path / "held-out"
    shutil.copytree(train_shards, held_out)
    import pyarrow as pa

    table = pq.read_table(held_out / "images.parquet")
    keep = pa.compute.equal(table["fold"], 0)
    pq.write_table(table.filter(keep), held_out / "images.parquet")
    r = _predict("-c", models[1], "--shards", held_out, "-o", tmp_path / "h.parquet")
    assert r.exit_code == 0, r.output
    assert "warning" not in r.output


def test_predict_groups_breasts_as_shard_does(train_shards, tmp_path):
    """`predict --dicom` names each image's breast (``key``) under the same table-over-header
    precedence as `shard`: a study from the table wins over (0020,000D), a missing study is
    the patient's, and an image without laterality is a breast of its own (per-breast
    metrics never merge unrelated images)."""
    from mammoprep.identity import pseudonym, resolve_salt
    from mammoprep.labels import load_labels
    from mammoprep.shards.plan import plan_samples, scan

    from mammotrain.dicom_input import scan_sources

    cohort = _cohort(train_shards)
    patients = [sorted((cohort / g).iterdir())[0] for g in ("Benign", "Malign")]
    src = tmp_path / "in"
    src.mkdir()
    for p in patients:
        for f in sorted(p.glob("*.dcm")):
            ds = pydicom.dcmread(f)
            if p == patients[1]:
                del ds.StudyInstanceUID  # stripped by some exports: the patient's study
            ds.save_as(src / f"{p.name}_{f.name}")
    files = sorted(src.glob("*.dcm"))
    table = tmp_path / "labels.csv"  # the first patient's images: study "exam-7" (table wins)
    table.write_text("path,study\n" + "".join(f"in/{f.name},exam-7\n" for f in files
                                               if f.name.startswith(patients[0].name)))
    labels = load_labels(f"csv:{table}", [src])
    salt = resolve_salt(None)
    sources, rejects = scan_sources([str(src)], salt, labels)
    assert not rejects and len(sources) == len(files)
    samples, _, _ = plan_samples(scan([str(f) for f in files], salt, None), labels, salt)
    shard_key = {v["path"]: s["key"] for s in samples for v in s["views"].values()}
    assert {s["path"]: s["key"] for s in sources} == shard_key
    by_path = {s["path"]: s for s in sources}
    for f in files:
        s = by_path[str(f)]
        if f.name.startswith(patients[0].name):
            assert s["key"].startswith(f"{pseudonym('exam-7', salt)}_")
        else:
            assert s["study"] == s["patient"] and s["key"] == f"{s['patient']}_{s['laterality']}"
    # no laterality anywhere: each such image is its own breast
    for f in files[:2]:
        ds = pydicom.dcmread(f)
        for tag in ("ImageLaterality", "Laterality"):
            if tag in ds:
                delattr(ds, tag)
        ds.save_as(f)
    sources, _ = scan_sources([str(src)], salt, None)
    keys = [s["key"] for s in sources if s["laterality"] not in ("L", "R")]
    assert len(keys) == 2 and len(set(keys)) == 2
