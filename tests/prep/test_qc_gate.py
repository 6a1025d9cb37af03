"""The segmentation quality gate from the command line: a planted suspect image is left out
with reason ``segmentation_suspect`` by `shard`, `harmonize` and `reference` (counted, exit 1)
while the rest of the batch is written; `--keep-suspect` stores it flagged; `mammoprep qc`
draws the contact sheet with suspect images first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from click.testing import CliRunner

from mammoprep.cli import main
from mammoprep.io.dicom import read_dicom
from mammoprep.synth import generate_cohort


def _plant_suspect(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` cropped to the inner half of the breast's width (a cropped
    export, like a spot view): the breast then runs off the side opposite the chest wall
    along most of the height, and no skin line can be found there."""
    ds = pydicom.dcmread(src)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    px = ds.pixel_array
    rows = px.shape[0]
    band = px[rows // 4: 3 * rows // 4]
    keep = band > 0 if ds.PhotometricInterpretation == "MONOCHROME2" else band < band.max()
    cols = np.flatnonzero(keep.any(axis=0))
    left = ds.get("ImageLaterality", "L") == "L"
    width = (cols.max() + 1) // 2 if left else (px.shape[1] - cols.min()) // 2
    crop = px[:, :width] if left else px[:, px.shape[1] - width:]
    ds.Columns = crop.shape[1]
    ds.PixelData = np.ascontiguousarray(crop, dtype=np.uint16).tobytes()
    ds.save_as(dst)


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> tuple[Path, Path]:
    """A small cohort with one image replaced by a planted suspect one; returns (root,
    suspect path)."""
    root = tmp_path_factory.mktemp("qcgate")
    generate_cohort(root, patients=3, seed=11, size=(384, 320))
    target = sorted(root.rglob("*_CC.dcm"))[0]
    tmp = target.with_suffix(".tmp")
    _plant_suspect(target, tmp)
    tmp.replace(target)
    return root, target


def test_planted_image_is_suspect_and_others_are_ok(batch):
    from mammoprep.segmentation.foreground import remove_burned_in

    root, suspect = batch
    for p in sorted(root.rglob("*.dcm")):
        _, info = remove_burned_in(read_dicom(p).pixels)
        assert (info["qc"] == "suspect") == (p == suspect), (p, info["qc_reason"])


def test_shard_rejects_suspect_and_keeps_the_rest(batch, tmp_path):
    root, suspect = batch
    n = len(list(root.rglob("*.dcm")))
    out = tmp_path / "s"
    r = CliRunner().invoke(main, ["shard", str(root), "-o", str(out), "--labels",
                                  f"lumina:{root}", "--size", "64", "--folds", "0", "-j", "1"])
    assert r.exit_code == 1, r.output
    assert "segmentation_suspect" in r.output
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    sus = [x for x in rejects if x["reason"] == "segmentation_suspect"]
    assert len(sus) == 1 and Path(sus[0]["path"]).name == suspect.name
    images = pq.read_table(out / "images.parquet").to_pylist()
    assert len(images) == n - len(rejects)
    assert all(x["qc"] == "ok" and 0 < x["breast_fraction"] < 1 for x in images)
    assert {x["chest_wall"] for x in images} <= {"left", "right"}


def test_shard_keep_suspect_stores_it_flagged(batch, tmp_path):
    root, suspect = batch
    out = tmp_path / "s"
    r = CliRunner().invoke(main, ["shard", str(root), "-o", str(out), "--labels",
                                  f"lumina:{root}", "--size", "64", "--folds", "0", "-j", "1",
                                  "--keep-suspect"])
    images = pq.read_table(out / "images.parquet").to_pylist()
    flagged = [x for x in images if x["qc"] == "suspect"]
    assert len(flagged) == 1 and flagged[0]["qc_reason"]
    assert "stored with a suspect segmentation" in r.output
    import webdataset as wds

    docs = [json.loads(s["json"]) for s in wds.WebDataset(sorted(str(p) for p in
                                                                  out.glob("*.tar")),
                                                           shardshuffle=False)]
    views = [v for d in docs for v in d["images"].values()]
    assert sum(v["qc"] == "suspect" for v in views) == 1
    assert all("background_level" in v and "threshold" in v for v in views)


def test_harmonize_rejects_suspect_unless_kept(batch, tmp_path):
    root, suspect = batch
    n = len(list(root.rglob("*.dcm")))
    ref = tmp_path / "ref.npz"
    r = CliRunner().invoke(main, ["reference", str(root), "-o", str(ref), "--energy", "any"])
    assert ref.exists(), r.output
    assert "segmentation_suspect" in r.output  # left out of the reference, counted
    out = tmp_path / "h"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(root), "-o", str(out),
                                  "-j", "1", "--format", "png"])
    assert r.exit_code == 1
    rows = [json.loads(x) for x in (out / "harmonize_log.jsonl").read_text().splitlines()]
    bad = [x for x in rows if x["status"] != "ok"]
    assert len(bad) == 1 and bad[0]["kind"] == "segmentation_suspect"
    assert len(list(out.rglob("*.png"))) == n - 1
    out2 = tmp_path / "h2"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(root), "-o", str(out2),
                                  "-j", "1", "--format", "png", "--keep-suspect"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (out2 / "harmonize_log.jsonl").read_text().splitlines()]
    assert sorted(x["qc"] for x in rows).count("suspect") == 1


def test_qc_sheet_cli(batch, tmp_path):
    root, suspect = batch
    src = tmp_path / "in"
    shutil.copytree(root, src)
    (src / "broken.dcm").write_bytes(b"not a dicom at all" * 10)
    out = tmp_path / "qc.png"
    r = CliRunner().invoke(main, ["qc", str(src), "-o", str(out), "-j", "1", "--max", "4"])
    assert r.exit_code == 1
    assert "1 suspect" in r.stdout and "1 failed" in r.stdout
    assert f"SUSPECT {suspect.parent.name}/{suspect.name}" in r.output
    assert "ERROR in/broken.dcm" in r.output
    from PIL import Image

    with Image.open(out) as im:
        assert im.mode == "RGB" and im.size[0] > 200
        a = np.asarray(im)
    # tile 0 is the error (red frame), tile 1 the suspect image (orange frame); a frame is
    # drawn 3 px outside its tile, 3 px wide
    from mammoprep.segmentation.qc import TILE_W

    x1 = (TILE_W + 8) + 4 + TILE_W // 2
    assert tuple(a[2, x1]) == (255, 170, 40)
    assert tuple(a[2, 4 + TILE_W // 2]) == (255, 80, 80)


def test_preview_of_a_non_mammogram_is_a_typed_error(tmp_path):
    """The WG04 CR radiograph that crashed `preview` (IndexError) is a typed reject now."""
    from ..conftest import SHARED_DICOM

    f = SHARED_DICOM / "edge" / "wg04_RG1_JLSN.dcm"
    if not f.exists():
        pytest.skip("real test data not found")
    ref = tmp_path / "ref.npz"
    from mammoprep.harmonise.match import Reference

    Reference.from_histograms([np.ones(4096, np.int64)], bits=12).save(ref)
    r = CliRunner().invoke(main, ["preview", str(f), "--ref", str(ref), "-o",
                                  str(tmp_path / "p.png")])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output and "wg04_RG1_JLSN.dcm" in r.output
    assert "breast segmentation looks wrong" in r.output  # the quality gate, typed
