"""CBIS-DDSM as a user downloads it from TCIA: the NBIA Data Retriever's descriptive folders
(``CBIS-DDSM/Mass-Test_P_00173_LEFT_CC/10-04-2016-DDSM-NNNNN/1.000000-full mammogram
images-NNNNN/1-1.dcm``) and the four description tables, through ``mammoprep shard``.

The full mammograms are the two real CBIS-DDSM films in ../shared/testdata/film (headers as
published: PatientID = the case folder, Study/Series Instance UIDs = those of the tables'
paths); the tables' rows are written from their headers. Each abnormality's ROI series holds
a binary mask of the film's size and a smaller, non-binary crop, saved under NBIA names (one
shared series for the CC; separate ``ROI mask`` and ``cropped images`` series for the MLO,
whose row swaps the crop and mask columns). The same files renamed into one flat folder must
give the same manifest."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from click.testing import CliRunner

from mammoprep.cli import main
from mammoprep.identity import pseudonym
from mammoprep.labels import load_labels
from mammoprep.labels.cbis_index import HeaderIndex, clean_path, path_triple, roi_boxes

from .test_labels import write_cbis_tables, write_dicom

REPO = Path(__file__).resolve().parents[2]
#: ../shared beside the checkout (or beside the worktrees' folder, for a worktree in wt/).
FILM = next((p for p in (REPO.parent / "shared" / "testdata" / "film",
                         REPO.parent.parent / "shared" / "testdata" / "film") if p.is_dir()),
            REPO.parent / "shared" / "testdata" / "film")
SALT = "cbis-download-test-salt-not-secret-0123456789"
CASE = "Mass-Test_P_00173_LEFT_{view}"
ROI_UID = "1.3.6.1.4.1.9590.100.1.2.917300{n}"
#: mask rectangles (rows, cols) in original pixels, per view
MASK = {"CC": (slice(1800, 2100), slice(700, 1000)), "MLO": (slice(2000, 2250), slice(500, 820))}


def _box(view: str) -> list[float]:
    r, c = MASK[view]
    return [float(c.start), float(r.start), float(c.stop), float(r.stop)]


def _crop() -> np.ndarray:
    return (np.arange(300 * 240, dtype=np.uint16).reshape(300, 240) % 4000) + 10


@pytest.fixture(scope="module")
def download(tmp_path_factory) -> dict:
    """The folder a user downloads: ``CBIS-DDSM/`` (NBIA layout) and the tables beside it.
    Returns the paths, the films' headers and every file's NBIA path by role."""
    if not FILM.is_dir():
        pytest.skip(f"real test data not found: {FILM}")
    dl = tmp_path_factory.mktemp("download")
    nbia = dl / "CBIS-DDSM"
    films, files, mass_rows = {}, {}, []
    for n, view in enumerate(("CC", "MLO")):
        src = FILM / f"{CASE.format(view=view)}.dcm"
        hd = pydicom.dcmread(src, stop_before_pixels=True)
        assert hd.PatientID == CASE.format(view=view)  # published header
        img = (nbia / hd.PatientID / f"10-04-2016-DDSM-{30911 + n}"
               / f"1.000000-full mammogram images-{24515 + n}" / "1-1.dcm")
        img.parent.mkdir(parents=True)
        shutil.copyfile(src, img)
        films[view] = hd
        roi_case, study = f"{hd.PatientID}_1", ROI_UID.format(n=10 * n + 1)
        mask_series = ROI_UID.format(n=10 * n + 2)
        crop_series = mask_series if view == "CC" else ROI_UID.format(n=10 * n + 3)
        roi = nbia / roi_case / f"07-21-2016-DDSM-{40100 + n}"
        m = np.zeros((int(hd.Rows), int(hd.Columns)), np.uint8)
        m[MASK[view]] = 255
        if view == "CC":  # crop and mask in one series, as most of the archive
            crop = roi / f"1.000000-ROI mask images-{51000 + n}" / "1-1.dcm"
            mask = crop.parent / "1-2.dcm"
        else:  # the later release: a series per kind
            mask = roi / f"1.000000-ROI mask images-{51000 + n}" / "1-1.dcm"
            crop = roi / f"2.000000-cropped images-{52000 + n}" / "1-1.dcm"
        for path, px, series, k in ((mask, m, mask_series, 1), (crop, _crop(), crop_series, 2)):
            write_dicom(path, px, PatientID=roi_case, StudyInstanceUID=study,
                        SeriesInstanceUID=series, InstanceNumber=k)
        files[view] = {"image": img, "mask": mask, "crop": crop}
        image_rel = f"{hd.PatientID}/{hd.StudyInstanceUID}/{hd.SeriesInstanceUID}/000000.dcm"
        crop_rel = f"{roi_case}/{study}/{crop_series}/000000.dcm"
        mask_rel = f"{roi_case}/{study}/{mask_series}/000001.dcm"
        if view == "CC":  # the published crop cells end in a line break
            cells = [crop_rel + "\n", mask_rel]
        else:  # crop and mask columns swapped, as on some published rows
            cells = [mask_rel, crop_rel]
        mass_rows.append(["P_00173", 3, "LEFT", view, 1, "mass", "IRREGULAR", "SPICULATED", 4,
                          "MALIGNANT", 4, image_rel, *cells])
    calc_rows = [  # third-party audits: breast density 0 on P_01743 (files not downloaded)
        ["P_01743", 0, "RIGHT", view, 1, "calcification", "PLEOMORPHIC", "CLUSTERED", 4,
         "BENIGN", 3, f"Calc-Test_P_01743_RIGHT_{view}/1.3.6.1.4.1.9590.100.1.2.{k}1/"
         f"1.3.6.1.4.1.9590.100.1.2.{k}2/000000.dcm", "", ""]
        for k, view in ((81, "CC"), (82, "MLO"))]
    write_cbis_tables(dl, mass_rows, calc_rows, split="test")
    return {"dl": dl, "nbia": nbia, "films": films, "files": files}


@pytest.fixture(scope="module")
def flat(download, tmp_path_factory) -> Path:
    """Every file of the download in one folder, renamed (hard links where possible)."""
    folder = tmp_path_factory.mktemp("flat")
    names = iter(["q7.dcm", "a2.dcm", "zz.dcm", "m0.dcm", "b9.dcm", "c1.dcm"])
    for view in ("MLO", "CC"):
        for role in ("mask", "image", "crop"):
            src, dst = download["files"][view][role], folder / next(names)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
    return folder


def _shard(images: Path, tables: Path, out: Path) -> tuple[list[dict], dict, str]:
    r = CliRunner().invoke(main, ["shard", str(images), "-o", str(out), "--labels",
                                  f"cbis-ddsm:{tables}", "--size", "256", "-j", "1",
                                  "--folds", "0", "--salt", SALT])
    assert r.exit_code == 0, r.output
    rows = pq.read_table(out / "images.parquet").to_pylist()
    return rows, json.loads((out / "config.json").read_text())["summary"], r.output


def _check_manifest(download, rows, summary, output) -> None:
    by_uid = {r["sop_uid_hash"]: r for r in rows}
    assert len(rows) == 2  # the two full mammograms; crops and masks are not stored
    for view, hd in download["films"].items():
        row = by_uid[pseudonym(hd.SOPInstanceUID, SALT.encode())]
        assert (row["laterality"], row["view"], row["split"]) == ("L", view.lower(), "test")
        assert (row["label_diagnosis"], row["label_birads2"], row["label_density"]) == (1, 1, 2)
        assert row["boxes_original"] == [_box(view)]  # the mask's box, original pixels
        assert len(row["boxes"]) == 1
        assert "P_00173" not in json.dumps(row, default=str)  # pseudonyms only
    labels = summary["labels"]
    assert labels["skipped_files"] == 4  # 2 crops + 2 masks
    assert labels["dropped_values"] == {} and labels["source_warnings"] == 1
    assert "calc_case_description_test_set.csv: 2 row(s) with breast density 0" in output
    assert labels["unmatched_rows"] == 2  # P_01743's files are not in this download
    assert "skipped 4 file(s)" in output and "official split (samples)" in output


def test_nbia_download_through_shard(download, tmp_path):
    rows, summary, output = _shard(download["nbia"], download["dl"], tmp_path / "out")
    _check_manifest(download, rows, summary, output)


def test_flat_copy_through_shard(download, flat, tmp_path):
    rows, summary, output = _shard(flat, download["dl"], tmp_path / "out")
    _check_manifest(download, rows, summary, output)


def test_nbia_download_labels_and_scan_time(download):
    """The label table alone: each film matched by header, its ROI files auxiliary; the
    header scan reads each of the 6 files once, header only."""
    start = time.perf_counter()
    table = load_labels(f"cbis-ddsm:{download['dl']}", roots=[download["nbia"]])
    seconds = time.perf_counter() - start
    for view, f in download["files"].items():
        row = table.lookup(f["image"])
        assert row is not None and row.boxes == [_box(view)] and row.split == "test"
        assert (row.pathology, row.birads, row.density) == ("malignant", "4", "C")
        assert table.is_auxiliary(f["mask"]) and table.is_auxiliary(f["crop"])
        assert not table.is_auxiliary(f["image"])
    assert table.warnings == [  # density 0 on both calc rows: a warning, no error
        "calc_case_description_test_set.csv: 2 row(s) with breast density 0 (row(s) 2, 3; a "
        "known quirk of the published tables, reported by third-party audits): their images "
        "have no density label"]
    index = HeaderIndex.scan([download["nbia"]])
    assert index.scanned == 6
    print(f"load_labels: {seconds:.3f} s; header scan {index.seconds / 6 * 1e3:.2f} ms/file")


# ------------------------------------------------------------------------ unit tests

def test_path_triple_and_clean_path():
    uid = "1.3.6.1.4.1.9590.100.1.2"
    rel = f"Mass-Training_P_00001_LEFT_CC_1/{uid}.1/{uid}.2/000000.dcm\n"
    assert clean_path(rel) == rel.strip()
    assert path_triple(rel) == ("Mass-Training_P_00001_LEFT_CC_1", f"{uid}.1", f"{uid}.2")
    assert path_triple("CBIS-DDSM\\" + rel.strip().replace("/", "\\")) == path_triple(rel)
    assert path_triple("a/b/000000.dcm") is None  # too short
    assert path_triple("case/07-20-2016-DDSM-74994/1.000000-full/1-1.dcm") is None  # not UIDs


def test_roi_boxes_by_content_not_by_name(tmp_path):
    """The mask is the binary file of the image's size; a crop (another size) is never
    decoded; a binary file of the image's size named like a crop is still the mask."""
    shape = (40, 30)
    m = np.zeros(shape, np.uint8)
    m[5:9, 3:7] = 1
    write_dicom(tmp_path / "crop.dcm", m)  # the mask, misnamed
    write_dicom(tmp_path / "mask.dcm", np.arange(64, dtype=np.uint8).reshape(8, 8))
    write_dicom(tmp_path / "grey.dcm", (np.arange(1200, dtype=np.uint16) % 7).reshape(shape))
    index, cache = HeaderIndex(), {}
    files = [tmp_path / n for n in ("mask.dcm", "crop.dcm", "grey.dcm")]
    boxes, why = roi_boxes(files, shape, index, cache)
    assert boxes == [[3.0, 5.0, 7.0, 9.0]]
    assert "8x8, image 40x30: a crop" in why[0] and "not a binary mask" in why[1]
    assert set(cache) == {(str(files[1]), shape), (str(files[2]), shape)}  # crop not decoded
