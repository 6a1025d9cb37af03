"""EMBED and RSNA as a user downloads them, end to end through ``mammoprep shard``.

The images are real mammograms (../shared/testdata/mammo_real) re-headed the way each
archive writes its files: RSNA's have no Modality, no Manufacturer, no View Position and a
Digital X-Ray For Presentation SOP class; EMBED's are named by their SOP Instance UID
under ``cohort_1/<empi_anon>/<acc_anon>/``. EMBED's ``ROI_coords`` are in the publisher's
PNG frame (every image mirrored to put the chest wall on the left): a bright marker drawn
in the DICOM pixels must be where the stored box is, for a breast whose chest wall is on
the left and one whose chest wall is on the right."""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.uid import ExplicitVRLittleEndian

from mammoprep.geometry import CHEST_WALL_LEFT, from_chest_wall_left, hflip, label_boxes
from mammoprep.cli import main
from mammoprep.identity import pseudonym
from mammoprep.labels import LabelError, load_labels
from mammoprep.io.png import decode_png16

from .test_labels import (EMBED_META_COLUMNS, RSNA_COLUMNS, embed_clin_row, embed_meta_row,
                          write_embed_tables)

SALT = "embed-rsna-download-test-salt-not-secret"
REPO = Path(__file__).resolve().parents[2]
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
#: Real 2294 x 1914 mammograms: chest wall on the left / on the right of the stored pixels.
LEFT_WALL = "DXm_2_25_108230795280146909138556370364240885876.DCM"
RIGHT_WALL = "DXm_2_25_105740110712269762199814895950720578890.DCM"
OTHERS = ("DXm_2_25_102225650577760012443884776983328874638.DCM",
          "DXm_2_25_114605502330206081390757163180312106015.DCM",
          "DXm_2_25_117798795405113153898471759402848658766.DCM",
          "DXm_2_25_139688330956310900376892844148884798019.DCM")


def mammo_real() -> Path:
    """../shared/testdata/mammo_real beside the checkout (a worktree under wt/ finds the
    one above); skips loudly when neither exists."""
    for root in (REPO.parent, REPO.parent.parent):
        path = root / "shared" / "testdata" / "mammo_real"
        if path.is_dir():
            return path
    pytest.skip(f"real test data not found: {REPO.parent / 'shared' / 'testdata'}")


def _shard(images: Path, out: Path, spec: str) -> tuple:
    """``mammoprep shard`` through click -> (result, config.json's summary, config.json)."""
    r = CliRunner().invoke(main, ["shard", str(images), "-o", str(out), "--labels", spec,
                                  "--size", "128", "-j", "1", "--salt", SALT])
    doc = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() \
        else {}
    return r, doc.get("summary"), doc


def _rows(out: Path) -> dict[str, dict]:
    """Manifest rows by the salted hash of their SOP Instance UID."""
    return {r["sop_uid_hash"]: r for r in pq.read_table(out / "images.parquet").to_pylist()}


# --------------------------------------------------------------------------------- RSNA

#: (patient_id, image_id, laterality, view, cancer, BIRADS, density), as in train.csv.
RSNA_ROWS = [(10006, 462822612, "L", "CC", 0, "", "B"),
             (10006, 1459541791, "L", "MLO", 0, 0, "B"),
             (10011, 220375232, "R", "CC", "1.0", "1.0", "C"),  # a table re-saved by pandas
             (10011, 270344397, "R", "MLO", 2, 2, "C"),   # cancer 2: not in the legend
             (10011, 1031443799, "R", "AT", 0, "", "C"),   # views shards do not store
             (10038, 1967300488, "L", "ML", 0, 1, "")]


def _rsna_dicom(src: Path, dst: Path, patient: int, laterality: str) -> str:
    """``src`` re-headed as the competition's files are; returns its SOP Instance UID."""
    ds = pydicom.dcmread(src)
    for keyword in ("Modality", "Manufacturer", "ViewPosition"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    ds.PatientID = str(patient)
    ds.ImageLaterality = laterality
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst)
    return str(ds.SOPInstanceUID)


@pytest.fixture(scope="module")
def rsna_download(tmp_path_factory) -> tuple[Path, Path, dict]:
    """``train_images/<patient_id>/<image_id>.dcm`` + ``train.csv``; returns (images,
    train.csv, {sop hash: (laterality, view, pathology, birads, density)})."""
    real = mammo_real()
    root = tmp_path_factory.mktemp("rsna")
    expected = {}
    sources = (LEFT_WALL, *OTHERS, RIGHT_WALL)
    for (p, i, lat, view, cancer, birads, dens), src in zip(RSNA_ROWS, sources):
        uid = _rsna_dicom(real / src, root / "train_images" / str(p) / f"{i}.dcm", p, lat)
        pathology = {"0": "benign", "1": "malignant"}.get(str(cancer)[:1] if cancer != 2
                                                           else None)
        expected[pseudonym(uid, SALT.encode())] = (lat, view.lower(), pathology,
                                                   str(birads)[:1] if birads != "" else None,
                                                   dens or None)
    with open(root / "train.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(RSNA_COLUMNS)
        for p, i, lat, view, cancer, birads, dens in RSNA_ROWS:
            w.writerow([2, p, i, lat, view, 61.0, cancer, 0, 0, birads, 0, dens, 49, "False"])
    return root / "train_images", root / "train.csv", expected


def test_rsna_download_shards_with_skipped_views_and_a_dropped_value(rsna_download, tmp_path):
    images, table, expected = rsna_download
    out = tmp_path / "shards"
    r, summary, config = _shard(images, out, f"rsna:{table}")
    assert r.exit_code == 0, r.output  # without --allow-rejects
    assert summary["rejected"] == 0, summary
    assert config["skipped_views"] == {"AT": 1, "ML": 1}
    assert '"AT": 1' in r.output and '"ML": 1' in r.output
    dropped = summary["labels"]["dropped_values"]
    assert set(dropped) == {"cancer"} and dropped["cancer"]["count"] == 1
    assert "1 value(s) of column cancer" in r.output
    rows = _rows(out)
    stored = {h: e for h, e in expected.items() if e[1] in ("cc", "mlo")}
    assert set(rows) == set(stored)
    for h, (lat, view, pathology, birads, density) in stored.items():
        got = rows[h]
        assert (got["laterality"], got["view"], got["pathology"], got["birads"],
                got["density"]) == (lat, view, pathology, birads, density)
        # no Modality: a DX SOP class with Image Laterality is what makes it a mammogram
        assert got["mammogram_evidence"] == "dx + image laterality"
    for patient in {str(p) for p, *_ in RSNA_ROWS}:  # no patient identifier in the output
        assert patient not in r.output and patient not in json.dumps(summary)


def test_rsna_download_strict_labels_stops_on_the_value(rsna_download, tmp_path):
    images, table, _ = rsna_download
    r = CliRunner().invoke(main, ["shard", str(images), "-o", str(tmp_path / "s"), "--labels",
                                  f"rsna:{table}", "--size", "128", "-j", "1",
                                  "--strict-labels", "--salt", SALT])
    assert r.exit_code != 0
    assert "train.csv:5" in r.output and "cancer" in r.output


# -------------------------------------------------------------------------------- EMBED

#: The ROI in the publisher's PNG frame (chest wall on the left): ymin, xmin, ymax, xmax.
ROI_PNG = (900, 300, 1100, 500)
MARKER = 900  # added to the stored values inside the ROI (12-bit images stay below 4096)


def _embed_dicom(src: Path, dst: Path, empi: int, laterality: str, marker_xyxy) -> str:
    """``src`` decoded, a bright marker added inside ``marker_xyxy`` (stored pixels), saved
    uncompressed with an EMBED-like header; returns its SOP Instance UID."""
    ds = pydicom.dcmread(src)
    px = ds.pixel_array.astype(np.uint16)
    x0, y0, x1, y1 = (int(v) for v in marker_xyxy)
    px[y0:y1, x0:x1] += MARKER
    ds.PixelData = px.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.Modality, ds.PatientID = "MG", str(empi)
    ds.ImageLaterality, ds.ViewPosition = laterality, "CC"
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


@pytest.fixture(scope="module")
def embed_download(tmp_path_factory) -> tuple[Path, Path, dict]:
    """EMBED Open Data layout and tables: a left CC whose chest wall is on the left, a right
    CC whose chest wall is on the right (both with the ROI ``ROI_PNG`` in the publisher's
    frame), clinical rows with ``asses`` X and one unknown code. Returns (images, tables,
    {sop hash: (laterality, birads, pathology, marker box in stored DICOM pixels)})."""
    real = mammo_real()
    root = tmp_path_factory.mktemp("embed")
    y0, x0, y1, x1 = ROI_PNG
    meta, expected = [], {}
    for lat, src, empi, acc in (("L", LEFT_WALL, 81001, 9100101), ("R", RIGHT_WALL, 81001,
                                                                     9100102)):
        width = pydicom.dcmread(real / src, stop_before_pixels=True).Columns
        marker = [x0, y0, x1, y1] if lat == "L" else hflip([[x0, y0, x1, y1]], width)[0]
        dst = root / "images" / "cohort_1" / str(empi) / str(acc) / "x.dcm"
        uid = _embed_dicom(real / src, dst, empi, lat, marker)
        dst.rename(dst.with_name(f"{uid}.dcm"))
        meta.append(embed_meta_row(empi, acc, uid, lat, "CC", rois=f"(({y0}, {x0}, {y1}, "
                                                                   f"{x1}),)"))
        expected[pseudonym(uid, SALT.encode())] = (lat, [float(v) for v in marker])
    clin = [embed_clin_row(81001, 9100101, "L", "X", "2.0"),  # "No Assessment"
            embed_clin_row(81001, 9100102, "R", "A", "2.0", sev="0.0"),
            embed_clin_row(81001, 9100102, "R", "Z", "2.0")]  # not in the legend
    write_embed_tables(root / "tables", meta, clin)
    return root / "images", root / "tables", expected


def _stored_png(out: Path, row: dict) -> np.ndarray:
    with tarfile.open(out / row["shard"]) as tar:
        return decode_png16(tar.extractfile(f"{row['key']}.{row['view']}.png").read())


def test_embed_download_boxes_land_on_the_marker(embed_download, tmp_path):
    images, tables, expected = embed_download
    out = tmp_path / "shards"
    r, summary, _ = _shard(images, out, f"embed:{tables}")
    assert r.exit_code == 0, r.output
    assert summary["rejected"] == 0
    dropped = summary["labels"]["dropped_values"]
    assert set(dropped) == {"asses"} and dropped["asses"]["count"] == 1, dropped
    assert "1 value(s) of column asses" in r.output
    rows = _rows(out)
    assert set(rows) == set(expected)
    labels = {rows[h]["laterality"]: (rows[h]["birads"], rows[h]["pathology"]) for h in rows}
    assert labels == {"L": (None, None), "R": ("0", "malignant")}  # X: no BI-RADS
    for h, (lat, marker) in expected.items():
        row = rows[h]
        assert row["boxes_original"] == [marker], lat
        img = _stored_png(out, row).astype(np.float64)
        bx0, by0, bx1, by1 = (int(round(v)) for v in row["boxes"][0])
        inside = img[by0 + 1:by1 - 1, bx0 + 1:bx1 - 1].mean()
        mx0, _, mx1, _ = hflip([row["boxes"][0]], img.shape[1])[0].round().astype(int)
        mirrored = img[by0 + 1:by1 - 1, mx0 + 1:mx1 - 1].mean()
        ring = np.concatenate([img[by0 - 4:by0 - 1, bx0:bx1].ravel(),
                               img[by1 + 1:by1 + 4, bx0:bx1].ravel()]).mean()
        assert inside > 1.15 * ring and inside > 1.15 * mirrored, (lat, inside, ring, mirrored)


def test_embed_download_strict_labels_stops(embed_download, tmp_path):
    images, tables, _ = embed_download
    with pytest.raises(LabelError, match="asses"):
        load_labels(f"embed:{tables}", strict=True)


# ---------------------------------------------------------------------------- units

def test_roi_columns_and_their_frames(tmp_path):
    """DCM_ROI_coords are stored pixels; ROI_coords / PNG_ROI_coords the mirrored frame."""
    base = embed_meta_row(61, 971, "5.1", "R", "CC", rois="((10, 20, 30, 40),)")
    clin = [embed_clin_row(61, 971, "R", "N", "1")]
    for column, frame in (("ROI_coords", CHEST_WALL_LEFT), ("PNG_ROI_coords", CHEST_WALL_LEFT),
                          ("DCM_ROI_coords", None)):
        folder = tmp_path / column
        header = EMBED_META_COLUMNS[:-1] + [column]
        folder.mkdir()
        with open(folder / "EMBED_OpenData_metadata.csv", "w", newline="") as fh:
            csv.writer(fh).writerows([header, base])
        write_embed_tables(folder / "c", [], clin)
        (folder / "c" / "EMBED_OpenData_clinical.csv").rename(
            folder / "EMBED_OpenData_clinical.csv")
        row = load_labels(f"embed:{folder}").lookup(Path("5.1.dcm"))
        assert (row.boxes, row.boxes_frame) == ([[20.0, 10.0, 40.0, 30.0]], frame), column


def test_from_chest_wall_left_mirrors_only_right_walls():
    b = [[20.0, 10.0, 40.0, 30.0]]
    assert from_chest_wall_left(b, 100, "left").tolist() == b
    assert from_chest_wall_left(b, 100, "right").tolist() == [[60.0, 10.0, 80.0, 30.0]]
    with pytest.raises(ValueError):
        from_chest_wall_left(b, 100, None)
    # the side found in the pixels wins; orient_left's flip means it was on the right;
    # without either, the laterality's usual side
    assert label_boxes(b, CHEST_WALL_LEFT, {"chest_wall": "left"}, 100, "R") == b
    assert label_boxes(b, CHEST_WALL_LEFT, {"chest_wall": "left", "flipped": True}, 100,
                       "L") == [[60.0, 10.0, 80.0, 30.0]]
    assert label_boxes(b, CHEST_WALL_LEFT, {}, 100, "R") == [[60.0, 10.0, 80.0, 30.0]]
    assert label_boxes(b, None, {"chest_wall": "right"}, 100, "R") == b
