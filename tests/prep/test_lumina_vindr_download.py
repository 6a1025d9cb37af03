"""LUMINA and VinDr-Mammo as a user downloads them, end to end through ``mammoprep shard``
(issue 22).

LUMINA: synthetic images (``mammoprep synth``) moved into the published layout
``Benign|Malign/<ID>/{L,R}_{CC,MLO}.dcm`` with IDs numbered per folder (``Benign/8`` and
``Malign/8`` are two people), and the two sheets written here from the published columns
(two rows per patient, MLO row first). VinDr-Mammo: real mammograms (../shared) copied into
PhysioNet's ``images/<study_id>/<image_id>.dicom`` with the two annotation CSVs in the
publisher's exact columns and spellings. Images are matched to manifest rows through the
salted ``sop_uid_hash``.
"""

from __future__ import annotations

import csv
import json
import shutil
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest
from click.testing import CliRunner

from mammoprep import synth
from mammoprep.cli import main
from mammoprep.io.paths import iter_dicom_paths
from mammoprep.identity import pseudonym
from mammoprep.labels import load_labels

from ..conftest import REPO
from .test_labels import SHEET_HEADER

SALT = "lumina-vindr-download-test-salt-0123456789"
SIZE = (128, 104)


def _by_uid(out: Path) -> dict[str, dict]:
    rows = pq.read_table(out / "images.parquet").to_pylist()
    return {r["sop_uid_hash"]: r for r in rows}


def _uid(path: Path) -> str:
    return pseudonym(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID,
                     SALT.encode())


def _shard(inputs: Path, out: Path, labels: str, *extra: str):
    r = CliRunner().invoke(main, ["shard", str(inputs), "-o", str(out), "--labels", labels,
                                  "--size", "128", "-j", "1", "--salt", SALT, *extra])
    assert r.exit_code == 0, r.output
    return r


def _sample_json(out: Path, key: str, shard: str) -> dict:
    with tarfile.open(out / shard) as tar:
        return json.loads(tar.extractfile(f"{key}.json").read())


# ------------------------------------------------------------------------------ LUMINA
# (patient, BIRADS, MLO row's composition, CC row's composition): two rows per patient
SHEETS = {
    ("Benign", 8): (2, 2, 3),       # rows differ: both views get the MLO row's B
    ("Benign", 9): (0, 1, "-"),     # CC row '-': the MLO image only (A); BI-RADS 0 kept
    ("Malign", 8): (5, "-", 4),     # MLO row '-': the CC image only (D)
    ("Malign", 9): ("-", 3, 3),     # BI-RADS '-': no diagnosis, density C
}


@pytest.fixture(scope="module")
def lumina_download(tmp_path_factory) -> tuple[Path, dict[tuple[str, int], str]]:
    """The published layout: 2 benign and 2 malignant patients, IDs 8 and 9 in each folder.
    Returns the folder and (group, ID) -> the laterality the sheet names."""
    from openpyxl import Workbook

    made = tmp_path_factory.mktemp("synth")
    synth.generate_cohort(made, patients=4, seed=3, size=SIZE)
    root = tmp_path_factory.mktemp("LUMINA")
    named: dict[tuple[str, int], str] = {}
    for group in ("Benign", "Malign"):
        wb = Workbook()
        ws = wb.active
        ws.append(SHEET_HEADER)
        folders = sorted(p for p in (made / group).iterdir() if p.is_dir())
        for pid, folder in zip((8, 9), folders):
            shutil.copytree(folder, root / group / str(pid))
            views = {f.stem for f in folder.glob("*.dcm")}
            lat = next(s for s in "LR" if {f"{s}_CC", f"{s}_MLO"} <= views)
            named[(group, pid)] = lat
            birads, mlo, cc = SHEETS[(group, pid)]
            side = "LEFT" if lat == "L" else "RIGHT"
            for comp in (mlo, cc):  # the published order: MLO row, then CC row
                ws.append([pid, side, birads, comp, "IMS GIOTTO"])
        wb.save(root / f"{group}_Cases.xlsx")
    return root, named


@pytest.fixture(scope="module")
def lumina_download_shards(lumina_download, tmp_path_factory):
    root, _ = lumina_download
    out = tmp_path_factory.mktemp("lumina-out") / "shards"
    r = _shard(root, out, f"lumina:{root}", "--folds", "4")
    return out, r.output


def _named_rows(root: Path, named: dict, out: Path) -> dict[tuple[str, int, str], dict]:
    """(group, ID, view) -> images.parquet row of the named breast's images."""
    rows = _by_uid(out)
    return {(g, pid, v): rows[_uid(root / g / str(pid) / f"{lat}_{v}.dcm")]
            for (g, pid), lat in named.items() for v in ("CC", "MLO")}


def test_lumina_same_id_in_both_folders_is_two_patients_in_two_folds(lumina_download,
                                                                       lumina_download_shards):
    root, _ = lumina_download
    out, _ = lumina_download_shards
    rows = _by_uid(out)
    patient, fold = {}, {}
    for f in sorted(root.rglob("*.dcm")):
        r = rows[_uid(f)]
        key = f"{f.parent.parent.name}/{f.parent.name}"
        patient.setdefault(key, set()).add(r["patient"])
        fold.setdefault(key, set()).add(r["fold"])
    # patient = class folder + ID, pseudonymised (salted): one pseudonym per person
    assert patient == {k: {pseudonym(k, SALT.encode())} for k in patient}
    assert patient["Benign/8"] != patient["Malign/8"]
    # four patients, four folds: Benign/8 and Malign/8 never share one
    assert all(len(v) == 1 for v in fold.values())
    assert fold["Benign/8"] != fold["Malign/8"] and len(set().union(*fold.values())) == 4
    for r in rows.values():  # no source identifier written
        assert r["patient"] not in ("8", "9", "Benign/8", "Malign/8")


def test_lumina_density_as_the_publishers_loader(lumina_download, lumina_download_shards):
    root, named = lumina_download
    out, _ = lumina_download_shards
    got = _named_rows(root, named, out)
    dens = {k: (r["density"], r["label_density"]) for k, r in got.items()}
    assert dens == {
        ("Benign", 8, "MLO"): ("B", 1), ("Benign", 8, "CC"): ("B", 1),  # the MLO row's value
        ("Benign", 9, "MLO"): ("A", 0), ("Benign", 9, "CC"): (None, None),
        ("Malign", 8, "MLO"): (None, None), ("Malign", 8, "CC"): ("D", 3),
        ("Malign", 9, "MLO"): ("C", 2), ("Malign", 9, "CC"): ("C", 2)}
    # Benign/8's breast is a two-view density example (label in the sample JSON)
    r = got[("Benign", 8, "CC")]
    doc = _sample_json(out, r["key"], r["shard"])
    assert doc["labels"]["density"] == 1 and sorted(doc["views"]) == ["cc", "mlo"]
    # diagnosis: BI-RADS 0 and '-' excluded; pathology from the folder
    diag = {(g, pid): got[(g, pid, "CC")]["label_diagnosis"] for g, pid in named}
    assert diag == {("Benign", 8): 0, ("Benign", 9): None, ("Malign", 8): 1,
                    ("Malign", 9): None}


def test_lumina_per_view_kind_keeps_each_rows_density(lumina_download, tmp_path):
    root, named = lumina_download
    out = tmp_path / "shards"
    r = _shard(root, out, f"lumina-per-view:{root}", "--folds", "4")
    assert "labels (lumina-per-view)" in r.output
    got = _named_rows(root, named, out)
    assert (got[("Benign", 8, "MLO")]["density"], got[("Benign", 8, "CC")]["density"]) == (
        "B", "C")
    assert got[("Malign", 8, "CC")]["density"] == "D" and got[("Malign", 8, "MLO")][
        "density"] is None
    r8 = got[("Benign", 8, "CC")]
    assert _sample_json(out, r8["key"], r8["shard"])["labels"]["density"] is None
    assert json.loads((out / "config.json").read_text())["summary"]["labels"][
        "source"] == "lumina-per-view"


def test_lumina_value_outside_the_legend_counted_strict_stops(lumina_download, tmp_path):
    """A composition ``E`` in a copy of the sheet: left out and counted by default,
    ``--strict-labels`` stops naming the sheet, row and column."""
    from openpyxl import load_workbook

    root, _ = lumina_download
    src = tmp_path / "LUMINA"
    shutil.copytree(root, src)
    wb = load_workbook(src / "Malign_Cases.xlsx")
    wb.active.cell(row=5, column=4, value="E")   # Malign/9's CC row
    wb.save(src / "Malign_Cases.xlsx")
    table = load_labels(f"lumina:{src}")
    assert table.dropped["BREAST COMPOSITION"]["count"] == 1
    r = CliRunner().invoke(main, ["shard", str(src), "-o", str(tmp_path / "o"), "--labels",
                                  f"lumina:{src}", "--strict-labels", "-j", "1", "--salt",
                                  SALT])
    assert r.exit_code == 1 and "Malign_Cases.xlsx:5" in r.output
    assert "column BREAST COMPOSITION" in r.output and "'E'" in r.output


# ---------------------------------------------------------------------------- VinDr-Mammo

def _real_mammograms() -> Path:
    """../shared/testdata/mammo_real (as tests/conftest.py finds ../shared), also from a
    worktree one folder deeper."""
    for base in (REPO.parent, REPO.parent.parent):
        d = base / "shared" / "testdata" / "mammo_real"
        if d.is_dir():
            return d
    pytest.skip(f"real test data not found: {REPO.parent / 'shared' / 'testdata'}")


# Four real 2294 x 1914 FFDM files (rows x columns; GE Senographe-sized)
REAL = ("DXm_2_25_102225650577760012443884776983328874638.DCM",
        "DXm_2_25_105740110712269762199814895950720578890.DCM",
        "DXm_2_25_114605502330206081390757163180312106015.DCM",
        "DXm_2_25_117798795405113153898471759402848658766.DCM")
STUDIES = ("4e2c6b1f0d6f4c7d9a2e5b8c3f1a0d9e", "9b7a51e3c2d84f06a1b3c5d7e9f20468")
# image id, study, laterality, view, breast_birads, breast_density, split
IMAGES = (("0a1b2c3d4e5f60718293a4b5c6d7e8f9", 0, "L", "CC", "BI-RADS 4", "DENSITY C",
           "training"),
          ("1f2e3d4c5b6a79880796a5b4c3d2e1f0", 0, "L", "MLO", "BI-RADS 4", "DENSITY C",
           "training"),
          ("2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c0b", 1, "R", "CC", "BI-RADS 1", "DENSITY B", "test"),
          ("3d5f7b9a1c2e4d6f8a0b2c4e6d8f0a1c", 1, "R", "MLO", "BI-RADS 1", "DENSITY B", "test"))
BREAST_COLUMNS = ["study_id", "series_id", "image_id", "laterality", "view_position",
                  "height", "width", "breast_birads", "breast_density", "split"]
FINDING_COLUMNS = ["image_id", "study_id", "series_id", "laterality", "view_position",
                   "height", "width", "breast_birads", "breast_density", "finding_categories",
                   "finding_birads", "xmin", "ymin", "xmax", "ymax", "split"]
# image index, finding_categories, finding_birads, box (PhysioNet writes floats)
FINDINGS = ((0, "['Mass']", "BI-RADS 4", (812.5, 1020.25, 1004.0, 1233.75)),
            (1, "['Suspicious Calcification', 'Mass']", "BI-RADS 4",
             (700.0, 900.0, 860.0, 1100.0)),
            (1, "['Global Asymmetry']", "BI-RADS 3", (300.0, 600.0, 1500.0, 1900.0)),
            (2, "['No Finding']", "", None),
            (3, "['No Finding']", "", None))


@pytest.fixture(scope="module")
def vindr_download(tmp_path_factory) -> tuple[Path, dict[str, tuple]]:
    """PhysioNet's VinDr-Mammo folder: the two annotation CSVs, metadata.csv and
    images/<study_id>/<image_id>.dicom. Returns it and sop hash -> (image index, row)."""
    real = _real_mammograms()
    root = tmp_path_factory.mktemp("vindr") / "vindr-mammo"
    expected = {}
    breast, finding = [], []
    for n, (iid, s, lat, view, birads, density, split) in enumerate(IMAGES):
        dst = root / "images" / STUDIES[s] / f"{iid}.dicom"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real / REAL[n], dst)
        ds = pydicom.dcmread(dst, stop_before_pixels=True)
        breast.append([STUDIES[s], f"series{s}", iid, lat, view, int(ds.Rows),
                       int(ds.Columns), birads, density, split])
        expected[_uid(dst)] = (n, breast[-1])
    for n, cats, fb, box in FINDINGS:
        b = breast[n]
        finding.append([b[2], b[0], b[1], b[3], b[4], b[5], b[6], b[7], b[8], cats, fb,
                        *(box or ("", "", "", "")), b[9]])
    for name, columns, rows in (("breast-level_annotations.csv", BREAST_COLUMNS, breast),
                                ("finding_annotations.csv", FINDING_COLUMNS, finding),
                                ("metadata.csv", ["SOP Instance UID", "Series Instance UID"],
                                 [])):
        with open(root / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(columns)
            w.writerows(rows)
    return root, expected


def test_vindr_dicom_extension_is_found(vindr_download):
    root, expected = vindr_download
    found = list(iter_dicom_paths([root / "images"]))
    assert len(found) == len(expected) and all(f.suffix == ".dicom" for f in found)


def test_vindr_download_to_shards(vindr_download, tmp_path):
    root, expected = vindr_download
    out = tmp_path / "shards"
    r = _shard(root / "images", out, f"vindr:{root}", "--folds", "0")
    rows = _by_uid(out)
    assert set(rows) == set(expected)  # every .dicom stored
    boxes = {0: [[812.5, 1020.25, 1004.0, 1233.75]], 1: [[700.0, 900.0, 860.0, 1100.0]],
             2: [], 3: []}
    for uid, (n, b) in expected.items():
        got = rows[uid]
        assert (got["laterality"], got["view"]) == (b[3], b[4].lower())
        assert got["split"] == {"training": "train", "test": "test"}[b[9]]
        assert got["birads"] == b[7][-1] and got["density"] == b[8][-1]
        assert got["label_diagnosis"] is None   # VinDr publishes no pathology
        # lesion boxes only: the Global Asymmetry box of image 1 is not stored
        assert got["boxes_original"] == boxes[n] and len(got["boxes"]) == len(boxes[n])
        assert got["patient"] == pseudonym(STUDIES[int(n >= 2)], SALT.encode())
    # one sample per breast, CC + MLO, split as published
    docs = {r["key"]: _sample_json(out, r["key"], r["shard"]) for r in rows.values()}
    assert sorted(d["split"] for d in docs.values()) == ["test", "train"]
    assert all(sorted(d["views"]) == ["cc", "mlo"] for d in docs.values())
    summary = json.loads((out / "config.json").read_text())["summary"]
    assert summary["labels"]["splits"] == {"test": 1, "train": 1}
    assert summary["labels"]["dropped_values"] == {}
    assert 'official split (samples): {"test": 1, "train": 1}' in r.output
    assert ("finding_annotations.csv: 1 finding box(es) not stored, their categories are "
            "not lesions to detect (Global Asymmetry 1); lesion boxes stored: 2 (Mass 2, "
            "Suspicious Calcification 1)") in r.output
    for s in STUDIES:  # no source identifiers in what is written
        assert s not in (out / "images.parquet").read_bytes().decode("latin-1")
