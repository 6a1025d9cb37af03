"""Reduced-resolution JPEG 2000 decoding (mammoprep.decoders, read_dicom(min_size=...),
shard --decode-scale) and the GPU plug-in (skipped without a CUDA device)."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from mammoprep import decoders
from mammoprep.decoders import j2k, pillow_j2k
from mammoprep.io.dicom import read_dicom

from ..conftest import real

J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
WG04 = "wg04_MG1_J2KI.dcm"  # NEMA WG04: real JPEG 2000 (irreversible), 4664x3064, 12 bits


def _dataset(px: np.ndarray, bits: int, spacing=(0.1, 0.1), laterality="L", view="CC",
             patient="P1", study="1.2.3.4"):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[patient, view, study])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = "MG", "HOLOGIC, Inc.", "Selenia"
    ds.PatientID, ds.StudyInstanceUID = patient, study
    ds.ImageLaterality, ds.ViewPosition = laterality, view
    ds.Rows, ds.Columns = px.shape
    ds.PixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = px.astype(np.uint16).tobytes()
    return ds


def _j2k_file(tmp_path, px, bits=14, name="img.dcm", **kw):
    """A Part 10 file with ``px`` encoded as JPEG 2000 lossless (pylibjpeg-openjpeg)."""
    from pydicom.uid import JPEG2000Lossless

    ds = _dataset(px, bits, **kw)
    ds.compress(JPEG2000Lossless)
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


def _breast(rows, cols, lesion_xyxy, right=False, seed=0, bits=14):
    """uint16 [rows, cols]: a half-ellipse breast (chest wall at column 0, or at the right
    edge), smooth texture plus noise, exact-zero background, and a bright rectangular lesion
    covering ``lesion_xyxy`` (original pixels, exclusive end)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    r = np.sqrt(((y - rows / 2) / (rows * 0.45)) ** 2 + (x / (cols * 0.8)) ** 2)
    top = (1 << bits) - 1
    img = np.where(r < 1, top * (0.3 + 0.3 * np.sqrt(np.clip(1 - r ** 2, 0, 1))), 0)
    img += np.where(r < 1, rng.normal(0, top * 0.005, img.shape), 0)
    x0, y0, x1, y1 = lesion_xyxy
    img[y0:y1, x0:x1] = top * 0.95
    img = np.clip(img, 0, top).astype(np.uint16)
    return img[:, ::-1].copy() if right else img


# --------------------------------------------------------------------- codestream header

def test_header_of_a_real_j2k_file():
    import pydicom

    ds = pydicom.dcmread(real(WG04))
    h = j2k.parse_header(decoders.single_frame_bytes(ds))
    assert (h.rows, h.cols, h.precision, h.signed, h.components) == (4664, 3064, 12, False, 1)
    assert h.levels >= 5  # the file decodes at 1/32 (see test below)
    assert j2k.reduced_shape(h, 3) == (583, 383)


@pytest.mark.parametrize("resolutions", [2, 4, 6])
def test_header_levels_from_an_independent_encoder(resolutions):
    import imagecodecs

    px = np.random.default_rng(0).integers(0, 4096, (300, 257)).astype(np.uint16)
    data = imagecodecs.jpeg2k_encode(px, level=0, codecformat="J2K", reversible=True,
                                     resolutions=resolutions, bitspersample=12)
    h = j2k.parse_header(data)
    assert (h.rows, h.cols, h.precision, h.levels) == (300, 257, 12, resolutions - 1)
    assert j2k.reduced_shape(h, 2) == (75, 65)


def test_header_rejects_other_data():
    with pytest.raises(ValueError, match="not a JPEG 2000"):
        j2k.parse_header(b"\x00" * 100)


# ------------------------------------------------------------------- level choice

@pytest.mark.parametrize("min_size, expected", [
    ((4096, 3328), 0), ((2048, 1664), 1), ((2049, 10), 0), ((1024, 0), 2), ((1, 1), 5),
    ((600, 400), 2)])
def test_reduction_for_keeps_at_least_the_request(min_size, expected):
    r = decoders.reduction_for(4096, 3328, min_size, (0, 1, 2, 3, 4, 5))
    assert r == expected
    assert all(a >= b for a, b in zip(decoders.reduced_size(4096, 3328, r), min_size))


def test_reduction_for_only_offered_levels():
    assert decoders.reduction_for(4096, 3328, (256, 208), (0, 1, 3)) == 3
    assert decoders.reduction_for(4096, 3328, (600, 400), (0, 1, 3)) == 1


def test_recentre_table():
    p = np.array([[0, 4], [8, 12]], np.uint16)
    # d = 1/4: (0.5625, 0.1875, 0.1875, 0.0625) weights; last row/column repeated
    assert np.array_equal(decoders.recentre(p, 1), [[3, 6], [9, 12]])
    assert np.array_equal(decoders.recentre(p, 2), [[5, 7], [10, 12]])  # d = 3/8; 4.5 -> 5
    assert decoders.recentre(p, 0) is p


@pytest.mark.parametrize("d", [0.25, 0.375, 0.4375])
def test_shift_bilinear_kernel_matches_its_numpy_twin(d):
    from mammoprep import kernels

    rng = np.random.default_rng(3)
    px = rng.integers(0, 65536, (37, 53)).astype(np.uint16)
    px[0, :] = 65535
    out = kernels.shift_bilinear(px, d)
    assert out.dtype == np.uint16
    assert np.array_equal(out, kernels.shift_bilinear_np(px, d))


# ----------------------------------------------------------------- pixels and geometry

def test_pillow_plugin_equals_default_decoder_at_full_resolution(tmp_path):
    px = _breast(400, 330, (100, 150, 140, 190))
    path = _j2k_file(tmp_path, px)
    a = read_dicom(path, decoder="pillow-openjpeg")
    b = read_dicom(path, decoder="pydicom")
    assert a.meta["decoder"] == "pillow-openjpeg" and b.meta["decoder"] == "pydicom"
    assert np.array_equal(a.pixels, px) and np.array_equal(b.pixels, px)


def test_pillow_plugin_equals_default_decoder_on_real_lossy_file():
    a = read_dicom(real(WG04), decoder="pillow-openjpeg").pixels
    b = read_dicom(real(WG04), decoder="pydicom").pixels
    assert np.array_equal(a, b)


def test_read_dicom_min_size_reduces_and_records_it():
    path = real(WG04)
    full = read_dicom(path)
    rec = read_dicom(path, min_size=1000)
    assert rec.meta["decode_reduction"] == 2 and rec.meta["decoder"] == "pillow-openjpeg"
    assert rec.pixels.shape == (1166, 766) and max(rec.pixels.shape) >= 1000
    assert (rec.meta["rows"], rec.meta["columns"]) == (4664, 3064)  # the header's size
    assert full.meta["decode_reduction"] == 0
    # the reduced image is a low-pass version of the full one: compare with 4x4 block means
    blocks = full.pixels[:4664, :3064].astype(np.float64).reshape(1166, 4, 766, 4).mean((1, 3))
    assert np.median(np.abs(rec.pixels - blocks)) < 0.01 * 4095


def test_pixel_spacing_follows_the_reduction(tmp_path):
    px = _breast(512, 416, (100, 200, 140, 240))
    path = _j2k_file(tmp_path, px, spacing=(0.07, 0.065))
    rec = read_dicom(path, min_size=128)
    f = 1 << rec.meta["decode_reduction"]
    assert f >= 4
    assert rec.meta["pixel_spacing_mm"] == pytest.approx([0.07 * f, 0.065 * f])
    assert read_dicom(path).meta["pixel_spacing_mm"] == pytest.approx([0.07, 0.065])


def test_forced_decoder_without_reduction_decodes_full(tmp_path):
    path = _j2k_file(tmp_path, _breast(256, 208, (50, 60, 70, 90)))
    rec = read_dicom(path, min_size=32, decoder="pydicom")
    assert rec.meta["decode_reduction"] == 0 and rec.pixels.shape == (256, 208)


def test_sizes_pillow_cannot_reduce_fall_back_to_levels_it_can(tmp_path):
    # 1001 rows: Pillow sizes level 2 as (1001 + 2) // 4 = 250, OpenJPEG as ceil = 251
    import pydicom

    px = _breast(1001, 1237, (300, 400, 360, 460))
    path = _j2k_file(tmp_path, px)
    ds = pydicom.dcmread(path)
    assert 2 not in pillow_j2k.reductions(ds, J2K_LOSSLESS)
    rec = read_dicom(path, min_size=250)
    r = rec.meta["decode_reduction"]
    assert r in pillow_j2k.reductions(ds, J2K_LOSSLESS)
    assert rec.pixels.shape == decoders.reduced_size(1001, 1237, r)
    assert max(rec.pixels.shape) >= 250


def test_reduced_pixels_sit_on_the_original_area_grid(tmp_path):
    """A bright square's centre in the reduced image times 2**r is its original centre."""
    px = np.full((1024, 832), 1000, np.uint16)
    px[300:364, 500:540] = 9000  # centre (332, 520) in pixel-centre coordinates + 0.5
    path = _j2k_file(tmp_path, px)
    for min_side in (512, 256, 128):
        rec = read_dicom(path, min_size=min_side)
        f = 1 << rec.meta["decode_reduction"]
        assert f > 1
        w = np.clip(rec.pixels.astype(np.float64) - 1000, 0, None)
        yy, xx = np.mgrid[0:w.shape[0], 0:w.shape[1]]
        cy = ((yy + 0.5) * w).sum() / w.sum() * f
        cx = ((xx + 0.5) * w).sum() / w.sum() * f
        assert abs(cy - 332) < 0.25 * f and abs(cx - 520) < 0.25 * f, (f, cy, cx)


# ------------------------------------------------------------- pipeline: boxes, transforms

def _stored(path, decode_scale, size=512, orient=False):
    from mammoprep.pipeline import PrepConfig, Prepared, crop_and_resize, preprocess

    prep = Prepared(PrepConfig(size=size, decode_scale=decode_scale, orient_left=orient))
    rec = preprocess(path, prep, salt=b"t")
    return crop_and_resize(rec, size, True)


def _lesion_box(stored: np.ndarray) -> np.ndarray:
    """xyxy box of the pixels brighter than the breast tissue can be (the lesion)."""
    ys, xs = np.nonzero(stored > 0.8 * stored.max())
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


@pytest.mark.parametrize("right", [False, True])
def test_box_on_the_original_lands_on_the_lesion_at_512(tmp_path, right):
    rows, cols = 2048, 1664
    box = (700, 900, 860, 1020)  # x0, y0, x1, y1 on the breast (left-sided image)
    px = _breast(rows, cols, box, right=right)
    if right:
        box = (cols - box[2], box[1], cols - box[0], box[3])
    path = _j2k_file(tmp_path, px, laterality="R" if right else "L")
    for scale in ("auto", "full"):
        rec, t = _stored(path, scale, orient=right)
        if scale == "auto":
            assert rec.meta["decode_reduction"] >= 1
        assert t.original_size == (rows, cols) and t.flipped == right
        mapped = t.apply([box])[0]
        assert np.abs(mapped - _lesion_box(rec.pixels)).max() <= 2.0, (scale, mapped)
        # and back: the stored box maps onto the original box within 2 stored pixels
        back = t.invert([mapped])[0]
        assert np.abs(back - np.asarray(box)).max() <= 2.0 / t.scale


def test_auto_and_full_store_nearly_the_same_image(tmp_path):
    px = _breast(2048, 1664, (700, 900, 860, 1020))
    path = _j2k_file(tmp_path, px)
    a, ta = _stored(path, "auto")
    b, tb = _stored(path, "full")
    assert a.meta["decode_reduction"] >= 1 and b.meta["decode_reduction"] == 0
    assert abs(ta.scale - tb.scale) / tb.scale < 0.02
    assert np.abs(np.asarray(ta.crop_xyxy) - np.asarray(tb.crop_xyxy)).max() <= 8
    h, w = min(a.pixels.shape[0], b.pixels.shape[0]), min(a.pixels.shape[1], b.pixels.shape[1])
    fa, fb = a.pixels[:h, :w].astype(float), b.pixels[:h, :w].astype(float)
    both = (fa > 0) & (fb > 0)
    assert np.abs(fa - fb)[both].mean() < 0.01 * ((1 << 14) - 1)


def test_small_crop_decodes_at_the_level_its_box_allows(tmp_path):
    """A breast whose crop is far smaller than the image: the coarse decode that gives the
    crop box (read_geometry) also says that no reduced level keeps enough pixels of it, so
    ``auto`` decodes at full size, like ``full``, with the same box."""
    from mammoprep import pipeline

    rows, cols = 2048, 1664
    px = np.zeros((rows, cols), np.uint16)
    px[600:1400, :500] = _breast(800, 500, (200, 350, 260, 420))
    path = _j2k_file(tmp_path, px)
    rec, t = _stored(path, "auto", size=512)
    crop_long = max(t.crop_xyxy[2] - t.crop_xyxy[0], t.crop_xyxy[3] - t.crop_xyxy[1])
    assert crop_long < 0.5 * rows
    r = rec.meta["decode_reduction"]
    assert r == pipeline.auto_reduction(crop_long, 512) == 0
    assert rec.meta["crop_box"] == [t.crop_xyxy[1], t.crop_xyxy[0], t.crop_xyxy[3],
                                    t.crop_xyxy[2]]
    assert t == _stored(path, "full", size=512)[1]
    assert t.scale <= 1.0  # only ever shrunk


@pytest.mark.parametrize("crop_long, size, expected", [
    (4096, 1024, 1), (2700, 1024, 0), (4096, 512, 1), (4096, 256, 2), (5000, 128, 3),
    (100, 1024, 0)])
def test_auto_reduction_rule(crop_long, size, expected):
    from mammoprep.pipeline import AUTO_MARGIN, auto_reduction

    r = auto_reduction(crop_long, size)
    assert r == expected
    assert r == 0 or crop_long / 2 ** r >= AUTO_MARGIN * r * size
    assert crop_long / 2 ** (r + 1) < AUTO_MARGIN * (r + 1) * size


def test_geometry_level_rule():
    from mammoprep.pipeline import geometry_level

    offered = (0, 1, 2, 3, 4, 5)
    assert geometry_level(4096, 3328, 1024, offered) == 3  # 512 px: cells of 2 stored px
    assert geometry_level(4096, 3328, 1024, (0, 1, 2)) == 2
    assert geometry_level(4096, 3328, 1500, offered) == 2  # >= size / 2
    assert geometry_level(4096, 3328, 2048, offered) == 0  # auto never reduces: none
    assert geometry_level(4096, 3328, None, offered) == 0
    assert geometry_level(2294, 1914, 512, (0, 1, 2)) == 2
    assert geometry_level(900, 700, 128, offered) == 0  # under GEOMETRY_MIN_SIDE at level 1
    assert geometry_level(4096, 3328, 1024, (0,)) == 0


def test_decode_scale_full_or_no_size_never_reduces():
    from mammoprep.pipeline import Geometry, PrepConfig, auto_level

    head = {"rows": 4096, "columns": 3328}
    geo = Geometry(3, [0, 0, 4096, 2900], None, (0, 1, 2, 3))
    assert auto_level(PrepConfig(size=512, decode_scale="full"), head, geo) == 0
    assert auto_level(PrepConfig(size=None, decode_scale="auto"), head, geo) == 0
    assert auto_level(PrepConfig(size=1024, decode_scale="auto"), head, geo) == 1
    assert auto_level(PrepConfig(size=1024, decode_scale="auto"), head, None) == 0
    assert auto_level(PrepConfig(size=1024, decode_scale="auto", crop=False), head, None) == 1
    assert auto_level(PrepConfig(size=2048, decode_scale="auto"), head, geo) == 0
    assert auto_level(PrepConfig(size=256, decode_scale="auto"), head, geo) == 2
    with pytest.raises(ValueError, match="decode_scale"):
        auto_level(PrepConfig(size=512, decode_scale="half"), head, geo)


# ------------------------------------------------------------------------- shards + CLI

def test_shards_record_the_reduction(tmp_path):
    import pyarrow.parquet as pq

    from mammoprep.pipeline import PrepConfig
    from mammoprep.shards.schema import ShardConfig
    from mammoprep.shards.write import build_shards
    from mammoprep.shards.verify import verify

    src = tmp_path / "in"
    src.mkdir()
    for view in ("CC", "MLO"):
        _j2k_file(src, _breast(1024, 832, (300, 400, 360, 460)), name=f"L_{view}.dcm",
                  view=view, spacing=(0.1, 0.1))
    cfg = ShardConfig(prep=PrepConfig(size=128, decode_scale="auto"), folds=0)
    out = tmp_path / "shards"
    summary = build_shards([str(src)], out, cfg, b"t", log=lambda *a: None)
    assert summary["images"] == 2 and not verify(out)
    rows = pq.read_table(out / "images.parquet").to_pylist()
    assert all(r["decode_reduction"] >= 1 for r in rows)
    assert all(r["original_rows"] == 1024 and r["original_cols"] == 832 for r in rows)
    for r in rows:  # the breast box is in original pixels whatever the reduction
        y0, x0, y1, x1 = r["breast_bbox"]
        assert y1 - y0 > 0.5 * 1024 and y1 <= 1024 and x1 <= 832
    with tarfile.open(out / rows[0]["shard"]) as tar:
        doc = json.loads(tar.extractfile(f"{rows[0]['key']}.json").read())
    img = doc["images"]["cc"]
    assert img["decode_reduction"] == rows[0]["decode_reduction"]
    expected = 0.1 / img["transform"]["scale"]  # mm per stored pixel
    assert img["stored_pixel_spacing_mm"] == pytest.approx([expected, expected], rel=1e-4)


def test_shard_cli_decode_scale_option(tmp_path):
    from click.testing import CliRunner

    from mammoprep.cli import main

    res = CliRunner().invoke(main, ["shard", "--help"])
    assert res.exit_code == 0 and "--decode-scale" in res.output
    res = CliRunner().invoke(main, ["shard", str(tmp_path), "-o", str(tmp_path / "o"),
                                    "--decode-scale", "half"])
    assert res.exit_code == 2 and "half" in res.output


# ---------------------------------------------------------------------------------- GPU

gpu = pytest.mark.skipif(not decoders.is_available("nvimgcodec"),
                         reason="needs a CUDA device, nvidia-nvimgcodec and nvJPEG2000")


@gpu
def test_gpu_plugin_identical_on_lossless(tmp_path):
    px = _breast(2048, 1664, (700, 900, 860, 1020))
    path = _j2k_file(tmp_path, px)
    gpu_px = read_dicom(path, decoder="nvimgcodec")
    assert gpu_px.meta["decoder"] == "nvimgcodec"
    assert np.array_equal(gpu_px.pixels, read_dicom(path, decoder="pydicom").pixels)
    assert np.array_equal(gpu_px.pixels, px)


@gpu
def test_gpu_plugin_is_used_at_full_size_when_reduction_is_asked(tmp_path):
    path = _j2k_file(tmp_path, _breast(1024, 832, (300, 400, 360, 460)))
    rec = read_dicom(path, min_size=128)
    assert rec.meta["decoder"] == "nvimgcodec" and rec.meta["decode_reduction"] == 0


@gpu
def test_gpu_plugin_within_tolerance_on_real_lossy():
    import pydicom

    from mammoprep.decoders import nvimgcodec

    ds = pydicom.dcmread(real(WG04))
    got = nvimgcodec.decode(ds, "1.2.840.10008.1.2.4.91").astype(np.int64)
    cpu = read_dicom(real(WG04), decoder="pydicom").pixels.astype(np.int64)
    assert got.shape == cpu.shape
    assert np.abs(got - cpu).max() <= 1  # irreversible wavelet: rounding may differ


def test_gpu_plugin_unavailable_here_is_reported_not_raised():
    # without a device the registry simply skips it (no import of nvImageCodec)
    from mammoprep.decoders import nvimgcodec

    if nvimgcodec.cuda_device_count() == 0:
        assert not decoders.is_available("nvimgcodec")
        assert "nvimgcodec" not in decoders.candidates(J2K_LOSSLESS)
    assert "nvimgcodec" in decoders.requirements()
