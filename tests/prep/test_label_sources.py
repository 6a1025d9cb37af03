"""Each label source end to end through ``mammoprep shard``: a LUMINA-layout archive (synth),
an RSNA-style archive and a CBIS-DDSM-style archive (synth images re-saved with the publisher's
file layout and header habits, tables written here from the publisher's schema), and the
generic table's precedence over the header. Labels are checked image by image through the
unsalted ``sop_uid_hash`` that links a manifest row to its source file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from click.testing import CliRunner

from mammoprep import synth
from mammoprep.cli import main
from mammoprep.identity import pseudonym
from mammoprep.labels import parse_birads
from mammoprep.pipeline import PrepConfig
from mammoprep.shards.schema import ShardConfig
from mammoprep.shards.write import build_shards
from mammoprep.shards.verify import verify

from .test_labels import (CALC_COLUMNS, MASS_COLUMNS, RSNA_COLUMNS, embed_clin_row,
                          embed_meta_row, write_dicom, write_embed_tables)

SALT = b"label-sources-test-salt-not-secret-0123456789"


def uid_hash(uid) -> str:
    """The manifest's sop_uid_hash of a SOP Instance UID (salted)."""
    return pseudonym(uid, SALT)
SIZE = (128, 104)


def _seed_with_one_view_density() -> int:
    """First seed whose 10-patient plan has a named breast with one view's density missing
    (the sheet's MLO or CC row '-') and a BILATERAL patient: the cases the rules are about."""
    for seed in range(200):
        plans = synth.plan_cohort(10, seed, SIZE)
        dens = [{synth.sheet_labels(p, synth.named_breasts(p)[0], v)[1] for v in ("CC", "MLO")}
                for p in plans]
        if any("-" in d and len(d) == 2 for d in dens) and any(
                p.side == "BILATERAL" for p in plans):
            return seed
    raise AssertionError("no seed found")


SEED = _seed_with_one_view_density()


COHORT = dict(patients=10, seed=SEED, size=SIZE)  # the `cohort` fixture (conftest.py)


def _by_uid(shards: Path) -> dict[str, dict]:
    return {r["sop_uid_hash"]: r for r in pq.read_table(shards / "images.parquet").to_pylist()}


def _sop(path: Path) -> str:
    return uid_hash(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _cfg(labels: str, **kw) -> ShardConfig:
    return ShardConfig(prep=PrepConfig(size=64), labels=labels, samples_per_shard=8, **kw)


def _config_summary(shards: Path) -> dict:
    return json.loads((shards / "config.json").read_text())["summary"]


# ------------------------------------------------------------------------------ LUMINA

@pytest.fixture(scope="module")
def lumina_shards(cohort, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("lumina") / "shards"
    r = CliRunner().invoke(main, ["shard", str(cohort), "-o", str(out), "--labels",
                                  f"lumina:{cohort}", "--size", "64", "-j", "1",
                                  "--salt", SALT.decode()])
    assert r.exit_code == 0, r.output
    return out, r.output


def test_lumina_archive_only_named_breasts_carry_labels(cohort, lumina_shards):
    out, output = lumina_shards
    rows = _by_uid(out)
    plans = {p.case_id: p for p in synth.plan_cohort(10, SEED, SIZE)}
    seen_named = seen_other = 0
    for f in sorted(cohort.rglob("*.dcm")):
        r = rows[_sop(f)]
        plan = plans[f.parent.name]
        lat, view = f.stem.split("_")
        labels = [r[f"label_{t}"] for t in ("diagnosis", "birads2", "birads3", "density")]
        if lat not in synth.named_breasts(plan):
            seen_other += 1
            assert labels == [None] * 4 and r["pathology"] is None, f
            continue
        seen_named += 1
        assert r["pathology"] == ("malignant" if plan.group == "Malign" else "benign")
        b = plan.breast(synth.named_breasts(plan)[0])
        assessed = b.birads not in ("0", "-")
        assert (r["label_diagnosis"] is not None) == assessed, f
        if assessed:
            assert r["label_diagnosis"] == int(plan.group == "Malign")
            assert r["label_birads2"] == int(int(b.birads) >= 4)
        # density per view, whatever the BI-RADS (0 included)
        assert (r["label_density"] is None) == (r["density"] is None)
    assert seen_named and seen_other
    assert "labels (lumina): labelled images per task" in output


def test_lumina_one_view_density_reaches_single_view_not_two_view(lumina_shards):
    from mammotrain.data import plan_examples
    from mammotrain.tasks import get_task

    out, _ = lumina_shards
    rows = pq.read_table(out / "images.parquet").to_pylist()
    by_key: dict[str, dict] = {}
    for r in rows:
        by_key.setdefault(r["key"], {})[r["view"]] = r["label_density"]
    one = [k for k, v in by_key.items() if len(v) == 2 and sum(x is not None for x in
                                                                 v.values()) == 1]
    assert one  # the seed guarantees one
    single, _ = plan_examples(rows, get_task("density"), 1)
    double, rep = plan_examples(rows, get_task("density"), 2)
    labelled_view = {k: next(v for v, x in by_key[k].items() if x is not None) for k in one}
    uids = {e.uid for e in single}
    assert all(f"{k}.{labelled_view[k]}" in uids for k in one)
    assert not {e.key for e in double} & set(one)
    assert rep.excluded["one_view_labelled"] == len(one)
    # the sample JSON carries the per-view labels too
    import tarfile

    k = one[0]
    shard = next(r["shard"] for r in rows if r["key"] == k)
    with tarfile.open(out / shard) as tar:
        doc = json.loads(tar.extractfile(f"{k}.json").read())
    assert doc["labels"]["density"] is None
    assert doc["images"][labelled_view[k]]["labels"]["density"] == by_key[k][labelled_view[k]]


# -------------------------------------------------------------------------------- RSNA

@pytest.fixture(scope="module")
def rsna_archive(cohort, tmp_path_factory) -> tuple[Path, Path, dict]:
    """train_images/<patient_id>/<image_id>.dcm without View Position (nor View Code
    Sequence), and train.csv. One image's header laterality contradicts the table."""
    root = tmp_path_factory.mktemp("rsna")
    images = root / "train_images"
    plans = {p.case_id: p for p in synth.plan_cohort(10, SEED, SIZE)}
    rows, expected = [], {}
    codes = ["", "0", "1", "2"]
    for n, f in enumerate(sorted(cohort.rglob("*.dcm"))):
        plan = plans[f.parent.name]
        lat, view = f.stem.split("_")
        pid, iid = 10000 + sorted(plans).index(plan.case_id), 500000 + 7 * n
        ds = pydicom.dcmread(f)
        for k in ("ViewPosition", "ViewCodeSequence"):
            if k in ds:
                delattr(ds, k)
        if n == 3:  # the header says the other side; the table wins
            ds.ImageLaterality = ds.Laterality = "R" if lat == "L" else "L"
        dst = images / str(pid) / f"{iid}.dcm"
        dst.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(dst)
        breast = plan.breast(lat)
        cancer = int(breast.pathology == "malignant")
        birads = codes[(pid + (lat == "L")) % 4]   # the same for both views of a breast
        rows.append([1, pid, iid, lat, view, 55.0, cancer, cancer, 0, birads, 0,
                     breast.density_class, 21, "False"])
        expected[uid_hash(ds.SOPInstanceUID)] = (lat, view.lower(), cancer, birads,
                                                 "ABCD".index(breast.density_class))
    with open(root / "train.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(RSNA_COLUMNS)
        w.writerows(rows)
    return images, root / "train.csv", expected


def test_rsna_archive(rsna_archive, tmp_path):
    images, table, expected = rsna_archive
    out = tmp_path / "shards"
    r = CliRunner().invoke(main, ["shard", str(images), "-o", str(out), "--labels",
                                  f"rsna:{table}", "--size", "64", "-j", "1",
                                  "--salt", SALT.decode()])
    assert r.exit_code == 0, r.output
    rows = _by_uid(out)
    assert set(rows) == set(expected)  # every image stored: view and laterality from the table
    for uid, (lat, view, cancer, birads, density) in expected.items():
        got = rows[uid]
        assert (got["laterality"], got["view"]) == (lat, view)
        assert got["label_diagnosis"] == cancer  # RSNA: any BI-RADS, recall included
        assert got["birads"] == (birads or None)
        assert got["label_birads2"] is None and got["label_birads3"] is None
        assert got["label_density"] == density
    summary = _config_summary(out)
    assert summary["labels"]["conflicts"] == {"laterality": 1, "view": 0, "study": 0}
    assert summary["labels"]["labelled_images"]["birads2"] == 0
    assert any("task birads2: no labelled image" in w for w in summary["warnings"])
    assert "table and header disagree (table used)" in r.output
    assert "task birads3: no labelled image" in r.output
    # the breast whose header laterality was wrong still forms a two-view sample
    keys = {}
    for row in rows.values():
        keys.setdefault(row["key"], set()).add(row["view"])
    assert sum(v == {"cc", "mlo"} for v in keys.values()) >= len(keys) - 2
    assert verify(out) == []


def test_headers_without_view_are_rejected_without_a_table_view(rsna_archive, tmp_path):
    images, _, expected = rsna_archive
    summary = build_shards([str(images)], tmp_path / "s", ShardConfig(
        prep=PrepConfig(size=64), labels=None, folds=0), SALT)
    assert summary["images"] == 0 and summary["rejects_by_reason"] == {
        "view_not_stored": len(expected)}


# --------------------------------------------------------------------------- CBIS-DDSM

@pytest.fixture(scope="module")
def cbis_archive(cohort, tmp_path_factory) -> tuple[Path, list[Path], dict]:
    """CBIS-DDSM layout: <case>/<uid>/<uid>/000000.dcm per image (headers: no laterality or
    view, PatientID = the case folder, one study per image, as CBIS-DDSM ships them), the ROI
    masks (binary DICOMs) beside them, and a mass and a calcification table."""
    root = tmp_path_factory.mktemp("cbis") / "CBIS-DDSM"
    with open(cohort / "labels.csv") as fh:
        synth_rows = list(csv.DictReader(fh))
    mass_rows, calc_rows, expected = [], [], {}
    for n, s in enumerate(synth_rows):
        pid = f"P_{int(s['patient'][1:]) + (500 if s['group'] == 'Malign' else 0):05d}"
        side = "LEFT" if s["laterality"] == "L" else "RIGHT"
        malignant = s["pathology"] == "malignant"
        kind = "Mass" if n % 2 == 0 else "Calc"
        case = f"{kind}-Training_{pid}_{side}_{s['view']}"
        uid = f"1.3.6.1.4.1.9590.100.1.2.{9000 + n}"
        img = f"{case}/{uid}.1/{uid}.2/000000.dcm"
        crop = f"{case}_1/{uid}.3/{uid}.4/000000.dcm"
        mask = f"{case}_1/{uid}.3/{uid}.4/000001.dcm"
        ds = pydicom.dcmread(cohort / s["path"])
        for k in ("ImageLaterality", "Laterality", "ViewPosition", "ViewCodeSequence",
                  "PatientOrientation"):
            if k in ds:
                delattr(ds, k)
        ds.PatientID = case
        ds.StudyInstanceUID = f"{uid}.1"
        (root / img).parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(root / img)
        boxes = json.loads(s["boxes"])
        x0, y0, x1, y1 = [int(round(v)) for v in boxes[0]] if boxes else (10, 20, 30, 44)
        m = np.zeros((int(s["rows"]), int(s["cols"])), np.uint8)
        m[y0:y1, x0:x1] = 255
        write_dicom(root / mask, m)
        write_dicom(root / crop, np.arange(36, dtype=np.uint8).reshape(6, 6))
        density = "ABCD".index(s["density"]) + 1 if s["density"] != "-" else 2
        pathology = "MALIGNANT" if malignant else "BENIGN_WITHOUT_CALLBACK"
        assessment = 5 if malignant else 2
        if kind == "Mass":
            mass_rows.append([pid, density, side, s["view"], 1, "mass", "OVAL", "SPICULATED",
                              assessment, pathology, 4, img, crop, mask])
        else:
            calc_rows.append([pid, density, side, s["view"], 1, "calcification", "PLEOMORPHIC",
                              "CLUSTERED", assessment, pathology, 4, img, crop, mask])
        expected[uid_hash(ds.SOPInstanceUID)] = (s["laterality"], s["view"].lower(),
                                                 int(malignant), [float(v) for v in
                                                                  (x0, y0, x1, y1)])
    tables = []
    for name, columns, rows in (("mass_case_description_train_set.csv", MASS_COLUMNS,
                                 mass_rows),
                                ("calc_case_description_train_set.csv", CALC_COLUMNS,
                                 calc_rows)):
        with open(root.parent / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(columns)
            w.writerows(rows)
        tables.append(root.parent / name)
    return root, tables, expected


def test_cbis_ddsm_archive(cbis_archive, tmp_path):
    root, tables, expected = cbis_archive
    out = tmp_path / "shards"
    summary = build_shards([str(root)], out, _cfg("cbis-ddsm:" + ",".join(map(str, tables))),
                           SALT)
    assert summary["rejected"] == 0, summary["rejects_by_reason"]
    assert summary["labels"]["skipped_files"] == 2 * len(expected)  # masks and crops
    rows = _by_uid(out)
    assert set(rows) == set(expected)
    for uid, (lat, view, malignant, box) in expected.items():
        got = rows[uid]
        assert (got["laterality"], got["view"], got["label_diagnosis"]) == (lat, view,
                                                                            malignant)
        assert got["label_birads2"] == malignant  # assessment 5 vs 2
        assert got["boxes_original"] == [box]
        assert len(got["boxes"]) == 1
    # one sample per breast (patient_id + side), CC and MLO together
    samples = {}
    for r in rows.values():
        samples.setdefault(r["key"], set()).add(r["view"])
    assert len(samples) == len({(r["patient"], r["laterality"]) for r in rows.values()})
    assert sum(v == {"cc", "mlo"} for v in samples.values()) >= len(samples) - 2
    assert summary["labels"]["conflicts"]["study"] == len(expected)  # table's patient_id
    assert verify(out) == []


def test_cbis_ddsm_view_in_both_tables_keeps_every_lesion(cohort, tmp_path):
    """A breast whose CC is in the mass table and the calcification table comes as two
    files (one per case folder). `shard` stores one of them (the other is a
    duplicate_view reject) with both lesions' boxes, and the breast is malignant because
    the calcification is."""
    root = tmp_path / "CBIS-DDSM"
    src = sorted((cohort / "Benign").rglob("L_CC.dcm"))[0]
    ds = pydicom.dcmread(src)
    for k in ("ImageLaterality", "Laterality", "ViewPosition", "ViewCodeSequence"):
        if k in ds:
            delattr(ds, k)
    rows_n, cols_n = int(ds.Rows), int(ds.Columns)
    px = ds.pixel_array.astype(np.int64)
    if ds.PhotometricInterpretation == "MONOCHROME1":  # background stored as the maximum
        px = (1 << int(ds.BitsStored)) - 1 - px
    ys, xs = np.nonzero(px > np.percentile(px[px > 0], 50))  # inside the breast
    cy, cx = int(np.median(ys)), int(np.median(xs))
    lesions = {"Mass": (cy - 12, cx - 6), "Calc": (cy + 6, cx - 3)}
    entries = {}
    for n, (kind, (y, x)) in enumerate(lesions.items()):
        case = f"{kind}-Training_P_00900_LEFT_CC"
        uid = f"1.3.6.1.4.1.9590.100.1.2.{7700 + n}"
        img = f"{case}/{uid}.1/{uid}.2/000000.dcm"
        crop = f"{case}_1/{uid}.3/{uid}.4/000000.dcm"
        mask = f"{case}_1/{uid}.3/{uid}.4/000001.dcm"
        ds.PatientID = case
        ds.StudyInstanceUID = f"{uid}.1"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{uid}.9"
        (root / img).parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(root / img)
        m = np.zeros((rows_n, cols_n), np.uint8)
        m[y:y + 6, x:x + 5] = 255
        write_dicom(root / mask, m)
        write_dicom(root / crop, np.arange(36, dtype=np.uint8).reshape(6, 6))
        entries[kind] = (img, crop, mask, [float(x), float(y), float(x + 5), float(y + 6)])
    tables = []
    for name, columns, kind, extra, pathology in (
            ("mass_case_description_train_set.csv", MASS_COLUMNS, "Mass",
             ["mass", "OVAL", "CIRCUMSCRIBED"], "BENIGN"),
            ("calc_case_description_train_set.csv", CALC_COLUMNS, "Calc",
             ["calcification", "PLEOMORPHIC", "CLUSTERED"], "MALIGNANT")):
        with open(tmp_path / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(columns)
            w.writerow(["P_00900", 2, "LEFT", "CC", 1, *extra, 4, pathology, 3,
                        *entries[kind][:3]])
        tables.append(tmp_path / name)
    out = tmp_path / "shards"
    summary = build_shards([str(root)], out, _cfg("cbis-ddsm:" + ",".join(map(str, tables)),
                                                  folds=0), SALT)
    assert summary["rejects_by_reason"] == {"duplicate_view": 1}
    (row,) = _by_uid(out).values()
    assert (row["laterality"], row["view"], row["label_diagnosis"]) == ("L", "cc", 1)
    assert sorted(row["boxes_original"]) == sorted(e[3] for e in entries.values())
    assert len(row["boxes"]) == 2
    assert verify(out) == []


# ----------------------------------------------------------------- generic table precedence

# ------------------------------------------------------------------------------- EMBED

@pytest.fixture(scope="module")
def embed_archive(cohort, tmp_path_factory) -> tuple[Path, Path, dict, dict]:
    """EMBED layout: cohort_1/<empi_anon>/<acc_anon>/<SOP UID>.dcm, one exam per breast,
    the metadata table naming each file by a path on the publisher's server, one C-view
    copy (to be skipped, not rejected) and the clinical table's codes (asses letters,
    tissueden, path_severity). Returns (images, tables, expected per SOP UID hash, breasts)."""
    tmp_path = tmp_path_factory.mktemp("embed")
    with open(cohort / "labels.csv") as fh:
        synth_rows = list(csv.DictReader(fh))
    letters = {str(v): k for k, v in {"A": 0, "N": 1, "B": 2, "P": 3, "S": 4, "M": 5,
                                      "K": 6}.items()}
    images = tmp_path / "images" / "cohort_1"
    meta, clin, expected, breasts = [], [], {}, {}
    for n, s in enumerate(synth_rows):
        empi = 70000 + int(s["patient"][1:]) + (500 if s["group"] == "Malign" else 0)
        acc = f"{empi}{'1' if s['laterality'] == 'L' else '2'}"
        ds = pydicom.dcmread(cohort / s["path"])
        uid = str(ds.SOPInstanceUID)
        dst = images / str(empi) / acc / f"{uid}.dcm"
        dst.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(dst)
        boxes = json.loads(s["boxes"])
        # ROI_coords are drawn on the publisher's PNG, mirrored to put the chest wall on
        # the left: synth's right breasts have theirs on the right
        drawn = [[ds.Columns - b[2], b[1], ds.Columns - b[0], b[3]] if s["laterality"] == "R"
                 else b for b in boxes]
        rois = str([[[b[1], b[0], b[3], b[2]] for b in drawn]]) if boxes else ""
        meta.append(embed_meta_row(empi, acc, uid, s["laterality"], s["view"], rois=rois))
        if (empi, acc) not in breasts:  # one clinical row per breast (= exam here)
            birads = letters.get(s["birads"], "")
            dens = str("ABCD".index(s["density"]) + 1) if s["density"] != "-" else ""
            sev = {"malignant": "0.0", "benign": "4.0"}.get(s["pathology"], "")
            clin.append(embed_clin_row(empi, acc, s["laterality"], birads, dens, sev=sev))
            breasts[(empi, acc)] = (s["pathology"] or None if sev else None,
                                    s["birads"] if birads else None,
                                    s["density"] if dens else None)
        pathology, birads, density = breasts[(empi, acc)]
        expected[uid_hash(uid)] = (s["laterality"], s["view"].lower(), pathology, birads,
                                   density, [[float(v) for v in b] for b in boxes])
        if n == 0:  # the exam's synthesised 2-D view: named in the table, never stored
            ds.SOPInstanceUID = cview = f"{uid}.99"
            ds.save_as(dst.with_name(f"{cview}.dcm"))
            meta.append(embed_meta_row(empi, acc, cview, s["laterality"], s["view"],
                                       kind="cview"))
    write_embed_tables(tmp_path / "tables", meta, clin)
    return tmp_path / "images", tmp_path / "tables", expected, breasts


def test_embed_archive(embed_archive, tmp_path):
    images, tables, expected, breasts = embed_archive
    out = tmp_path / "shards"
    r = CliRunner().invoke(main, ["shard", str(images), "-o", str(out),
                                  "--labels", f"embed:{tables}", "--size", "64",
                                  "-j", "1", "--salt", SALT.decode()])
    assert r.exit_code == 0, r.output
    assert "1 C-view" in r.output
    rows = _by_uid(out)
    assert set(rows) == set(expected)  # every 2-D image stored, the C-view skipped
    summary = _config_summary(out)
    assert summary["labels"]["skipped_files"] == 1 and summary["rejected"] == 0
    assert summary["labels"]["source"] == "embed"
    seen = {"malignant": 0, "benign": 0}
    for uid, (lat, view, pathology, birads, density, boxes) in expected.items():
        got = rows[uid]
        assert (got["laterality"], got["view"]) == (lat, view)
        assert (got["pathology"], got["birads"], got["density"]) == (pathology, birads,
                                                                    density), uid
        # diagnosis from the pathology whatever the BI-RADS (0 included)
        assert got["label_diagnosis"] == (None if pathology is None else
                                          int(pathology == "malignant"))
        assert got["label_birads2"] == (int(int(birads) >= 4) if birads not in (None, "0")
                                        else None)
        assert got["boxes_original"] == boxes
        seen[pathology] = seen.get(pathology, 0) + 1
    assert seen["malignant"] and seen["benign"]
    # one sample per breast (exam + side), CC and MLO together
    keys = {}
    for row in rows.values():
        keys.setdefault(row["key"], set()).add(row["view"])
    assert len(keys) == len(breasts)
    assert verify(out) == []


def test_generic_table_wins_over_the_header_and_counts_conflicts(cohort, tmp_path):
    """The table swaps the sides of one patient's CC images: they are stored with the
    table's sides, and both disagreements are counted. Paths are relative to the folder
    given to ``shard`` (not the table's); an empty view cell leaves the header's."""
    files = sorted((cohort / "Benign").rglob("*.dcm"))
    patient = files[0].parent
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "laterality", "view", "pathology", "birads", "density"])
        for f in files:
            lat, view = f.stem.split("_")
            if f.parent == patient and view == "CC":
                lat = "R" if lat == "L" else "L"
            w.writerow([f.relative_to(cohort / "Benign").as_posix(), lat,
                        view if f.parent == patient else "", "benign", "2", "B"])
    out = tmp_path / "shards"
    summary = build_shards([str(cohort / "Benign")], out,
                           _cfg(f"csv:{tmp_path / 'labels.csv'}", folds=0), SALT)
    rows = _by_uid(out)
    assert len(rows) == len(files) and summary["labels"]["unmatched_rows"] == 0
    swapped = 0
    for f in files:
        r = rows[_sop(f)]
        lat, view = f.stem.split("_")
        if f.parent == patient and view == "CC":
            lat, swapped = ("R" if lat == "L" else "L"), swapped + 1
        assert (r["laterality"], r["view"], r["label_diagnosis"]) == (lat, view.lower(), 0)
    assert swapped == 2
    assert summary["labels"]["conflicts"] == {"laterality": 2, "view": 0, "study": 0}
    assert _config_summary(out)["labels"]["conflicts"]["laterality"] == 2


def test_study_conflicts_count_grouping_not_identifiers(cohort, tmp_path):
    """Table study ids live in another namespace than (0020,000D) (accession numbers, case
    ids): only images the table groups differently are counted, not every image."""
    files = sorted((cohort / "Benign").rglob("*.dcm"))
    patients = sorted({f.parent for f in files})
    assert len({pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID
                for f in files}) == len(patients)  # the cohort: one study per patient

    def run(name, study_of):
        with open(tmp_path / f"{name}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "study", "pathology"])
            w.writerows([f.relative_to(cohort / "Benign").as_posix(), study_of(f), "benign"]
                        for f in files)
        summary = build_shards([str(cohort / "Benign")], tmp_path / name,
                               _cfg(f"csv:{tmp_path / name}.csv", folds=0), SALT)
        return summary["labels"]["conflicts"]["study"]

    per_patient = {p: n for n, p in enumerate(patients)}
    assert run("same", lambda f: f"ACC{per_patient[f.parent]:04d}") == 0
    n0 = sum(f.parent == patients[0] for f in files)
    n1 = sum(f.parent == patients[1] for f in files)
    # the first two patients' studies merged into one table study
    assert run("merged", lambda f: "ACC" if f.parent in patients[:2]
               else f"ACC{per_patient[f.parent]:04d}") == n0 + n1
    # the first patient's study split by side
    assert run("split", lambda f: f"ACC{per_patient[f.parent]:04d}" + (
        f.stem[0] if f.parent == patients[0] else "")) == n0


def test_unstratified_fold_split_is_reported(cohort, tmp_path):
    """Five benign patients and one malignant one cannot be stratified into 4 folds: the
    split is made unstratified and says so (summary, config.json)."""
    summary = build_shards([str(cohort / "Benign"), str(cohort / "Malign" / "M0001")],
                           tmp_path / "s", _cfg(f"lumina:{cohort}", folds=4), SALT)
    assert len(summary["warnings"]) == 1
    assert "NOT stratified" in summary["warnings"][0]
    assert "malignant 1" in summary["warnings"][0] and "benign 5" in summary["warnings"][0]
    assert summary["warnings"] == _config_summary(tmp_path / "s")["warnings"]
    folds = {r["patient"]: r["fold"] for r in _by_uid(tmp_path / "s").values()}
    assert len(folds) == 6 and set(folds.values()) == {0, 1, 2, 3}


def test_birads_values_in_sheet_are_parsed_strictly_end_to_end(cohort, tmp_path):
    """A BI-RADS 7 written into a copy of the published sheet stops `shard --strict-labels`
    with a message naming the sheet, row and column (exit 1, no traceback); without the
    flag the value is left out and counted (tests/prep/test_labels.py)."""
    import shutil

    from openpyxl import load_workbook

    src = tmp_path / "copy"
    shutil.copytree(cohort, src)
    wb = load_workbook(src / "Malign_Cases.xlsx")
    wb.active.cell(row=3, column=3, value=7)
    wb.save(src / "Malign_Cases.xlsx")
    r = CliRunner().invoke(main, ["shard", str(src), "-o", str(tmp_path / "o"), "--labels",
                                  f"lumina:{src}", "--strict-labels", "-j", "1", "--salt",
                                  SALT.decode()])
    assert r.exit_code == 1 and "Malign_Cases.xlsx:3" in r.output
    assert "column BIRADS" in r.output and "Traceback" not in r.output
    assert parse_birads("4B") == "4"


def test_shard_help_documents_the_generic_schema():
    r = CliRunner().invoke(main, ["shard", "--help"])
    assert r.exit_code == 0
    for column in ("path", "patient", "study", "laterality", "view", "pathology", "birads",
                   "density", "boxes"):
        assert f"\n    {column} " in r.output, column
    assert "rsna:CSV" in r.output and "cbis-ddsm:CSV" in r.output and "wins over" in r.output


# ------------------------------------------------- from the publisher's table to a model

TINY = ["--backbone", "test_resnet", "--size", "32", "--epochs", "1", "--batch-size", "4",
        "--workers", "0", "--max-steps-per-epoch", "1", "--device", "cpu", "--gradcam", "0",
        "--folds", "0"]


@pytest.mark.parametrize("kind", ["rsna", "cbis-ddsm", "embed"])
def test_archive_goes_to_cv_and_predict(kind, rsna_archive, cbis_archive, embed_archive,
                                        tmp_path):
    """RSNA-, CBIS-DDSM- and EMBED-style archives: `mammoprep shard` -> `mammotrain cv` ->
    `mammotrain predict --dicom ... --labels` with the labels their publishers meant (and
    without the files they name but that are not mammograms to store: CBIS-DDSM's masks
    and crops, EMBED's C-view)."""
    from mammotrain.cli import main as train_main

    if kind == "rsna":
        images, table, expected = rsna_archive
        spec = f"rsna:{table}"
    elif kind == "embed":
        images, tables, found, _ = embed_archive
        spec = f"embed:{tables}"
        expected = {uid: (*v[:2], -1 if v[2] is None else int(v[2] == "malignant"))
                    for uid, v in found.items()}
    else:
        images, tables, expected = cbis_archive
        spec = "cbis-ddsm:" + ",".join(map(str, tables))
    shards = tmp_path / "shards"
    r = CliRunner().invoke(main, ["shard", str(images), "-o", str(shards), "--labels", spec,
                                  "--size", "48", "--folds", "2", "-j", "1",
                                  "--salt", SALT.decode(), "--allow-rejects"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(train_main, ["cv", "--task", "diagnosis", "--views", "1",
                                        "--shards", str(shards), "--out", str(tmp_path / "m"),
                                        *TINY])
    assert r.exit_code == 0, r.output
    ckpt = tmp_path / "m" / "fold0" / "best.pt"
    out = tmp_path / "pred.parquet"
    r = CliRunner().invoke(train_main, ["predict", "-c", str(ckpt), "--dicom", str(images),
                                        "--labels", spec, "-o", str(out), "--device", "cpu"],
                           env={"MAMMOPREP_SALT": SALT.decode()})  # the shards' salt
    assert r.exit_code == 0, r.output
    rows = pq.read_table(out).to_pylist()
    assert {row["sop_uid_hash"] for row in rows} == set(expected)
    for row in rows:
        assert pydicom.dcmread(row["path"]).SOPInstanceUID == row["sop_instance_uid"]
        assert row["label"] == expected[row["sop_uid_hash"]][2]  # cancer / MALIGNANT
