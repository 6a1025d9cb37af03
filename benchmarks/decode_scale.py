"""How much reduced-resolution JPEG 2000 decoding changes the stored images, per level.

    .venv/bin/python benchmarks/decode_scale.py [--patients 4] [--synth-size 4096x3328]
        [--real 6] [--sizes 512,1024]

For every image and every resolution level ``r`` the codestream offers, runs the shard
chain (read -> text removal -> harmonisation to a low-energy reference -> crop -> resize to
``--size``) on the image decoded with ``r`` levels dropped and on the full decode, and
compares the two stored images in the full path's frame (the reduced one mapped through
both original->stored transforms): mean absolute difference on the foreground as % of full
scale, the KS distance of the two foreground value distributions, and the IoU of the two
breast masks. ``crop ratio`` = decoded breast crop's longer side / ``--size``: what
``decode_scale='auto'`` bounds from below (``mammoprep.pipeline.AUTO_MARGIN``).

Inputs: a synthetic cohort transcoded to JPEG 2000 lossless; the real full-field images in
``../shared/testdata/mammo_real`` (JPEG lossless) transcoded to JPEG 2000 lossless; and the
real JPEG 2000 (lossy) file ``../shared/testdata/dicom/wg04_MG1_J2KI.dcm``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "testdata"


def to_j2k(src: Path, dst: Path) -> Path:
    """``src`` re-encoded as JPEG 2000 lossless (pydicom + pylibjpeg-openjpeg)."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    ds = pydicom.dcmread(src)
    if ds.file_meta.TransferSyntaxUID != JPEG2000Lossless:
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        ds.compress(JPEG2000Lossless)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst)
    return dst


def prepared(path: Path, reduction: int | None, reference, salt: bytes):
    """The shard chain up to the crop on ``path`` decoded with ``reduction`` levels dropped
    (None = full): read -> text removal -> harmonisation. Returns (record, full scale), or
    None when the level is not offered or no breast is found at it."""
    from mammoprep.io.dicom import read_dicom
    from mammoprep.errors import MammoprepError
    from mammoprep.segmentation.foreground import remove_text
    from mammoprep.harmonise.match import harmonize

    min_size = None
    if reduction is not None:
        rows, cols = _header_size(path)
        f = 1 << reduction
        min_size = (-(-rows // f), -(-cols // f))
    rec = read_dicom(path, salt=salt, min_size=min_size)
    if reduction is not None and rec.meta["decode_reduction"] != reduction:
        return None
    try:
        rec = remove_text(rec, keep_suspect=True)
    except MammoprepError:  # e.g. too small to hold a breast at this level
        return None
    bits = int(rec.meta.get("value_bits") or rec.meta["bits_stored"])
    if reference is not None:
        rec = harmonize(rec, reference)
        bits = reference.bits
    return rec, (1 << bits) - 1


def _header_size(path: Path) -> tuple[int, int]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return int(ds.Rows), int(ds.Columns)


def levels(path: Path) -> tuple[int, ...]:
    import pydicom

    from mammoprep.decoders import pillow_j2k

    ds = pydicom.dcmread(path)
    return pillow_j2k.reductions(ds, str(ds.file_meta.TransferSyntaxUID))


def compare(full_rec, red_rec, size: int, full_scale: int) -> dict:
    """The reduced path's stored image vs what the full path stores for the same original
    window at the same size (the reduced path's crop, taken from the full-resolution
    harmonised image and resized alike), so both share one pixel grid and no
    interpolation enters the comparison. Also: the IoU of the two paths' own crop windows
    and the decoded crop's longer side / ``size``."""
    from mammoprep.pipeline import crop_and_resize
    from mammoprep.resize import resize_uint16

    red, t = crop_and_resize(red_rec, size, True)
    _, t_full = crop_and_resize(full_rec, size, True)
    x0, y0, x1, y1 = t.crop_xyxy
    same = resize_uint16(np.ascontiguousarray(full_rec.pixels[y0:y1, x0:x1]), *t.stored_size)
    a, b = red.pixels.astype(np.int64), same.astype(np.int64)
    both = (a > 0) & (b > 0)
    mad = float(np.abs(a[both] - b[both]).mean()) / full_scale * 100 if both.any() else 0.0
    bb = red_rec.meta["breast_bbox"]
    return {"mad_pct": mad, "ks": ks_distance(b[b > 0], a[a > 0]),
            "mask_iou": float(both.sum() / max(((a > 0) | (b > 0)).sum(), 1)),
            "crop_iou": box_iou(t.crop_xyxy, t_full.crop_xyxy),
            "crop_ratio": max(bb[2] - bb[0], bb[3] - bb[1]) / size}


def into_frame(img: np.ndarray, t_img, t_ref, order: int) -> np.ndarray:
    """``img`` (stored under transform ``t_img``) resampled onto the stored frame of
    ``t_ref``: pixel centres -> original coordinates -> ``img`` coordinates (order 1:
    bilinear, 0: nearest; outside ``img`` is 0)."""
    from scipy.ndimage import map_coordinates

    h, w = t_ref.stored_size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    xs, ys = xx + 0.5, yy + 0.5
    if t_ref.flipped:
        xs = w - xs
    xo = xs / t_ref.scale + t_ref.crop_xyxy[0]
    yo = ys / t_ref.scale + t_ref.crop_xyxy[1]
    xi = (xo - t_img.crop_xyxy[0]) * t_img.scale
    yi = (yo - t_img.crop_xyxy[1]) * t_img.scale
    if t_img.flipped:
        xi = t_img.stored_size[1] - xi
    return map_coordinates(img.astype(np.float64), [yi - 0.5, xi - 0.5], order=order,
                           mode="constant", cval=0.0)


def compare_shards(full_dir: Path, auto_dir: Path) -> list[dict]:
    """Per stored image of two shard folders of the same inputs (``--decode-scale full`` and
    ``auto``): the auto image mapped into the full image's frame through both transforms
    (bilinear, so sub-pixel resampling adds to the difference: an upper bound), mean
    absolute difference on the common foreground as % of full scale (``2^value_bits - 1``),
    KS distance of the foreground values, breast-mask IoU, the auto decode level, and
    whether the two stored sizes and transforms are identical (``same_geometry``; then the
    mapping is the identity and the difference is the pixels' alone)."""
    import io
    import json
    import tarfile

    import pyarrow.parquet as pq
    from PIL import Image

    from mammoprep.geometry import Transform

    def load(d: Path) -> dict:
        out = {}
        for r in pq.read_table(d / "images.parquet").to_pylist():
            with tarfile.open(d / r["shard"]) as tar:
                px = np.asarray(Image.open(io.BytesIO(tar.extractfile(
                    f"{r['key']}.{r['view']}.png").read())), dtype=np.uint16)
                doc = json.loads(tar.extractfile(f"{r['key']}.json").read())
            out[(r["key"], r["view"])] = (px, Transform.from_dict(doc["transform"][r["view"]]),
                                          r)
        return out

    full, auto = load(full_dir), load(auto_dir)
    rows = []
    for k in sorted(full.keys() & auto.keys()):
        (f, tf, row), (a, ta, arow) = full[k], auto[k]
        scale = (1 << int(row.get("value_bits") or row["bits_stored"])) - 1
        vals = into_frame(a, ta, tf, 1)
        mask_a = into_frame((a > 0).astype(np.float64), ta, tf, 0) > 0.5
        both = (f > 0) & mask_a
        rows.append({
            "mad_pct": float(np.abs(vals[both] - f[both]).mean()) / scale * 100,
            "ks": ks_distance(f[f > 0], a[a > 0]),
            "mask_iou": float(both.sum() / max(((f > 0) | mask_a).sum(), 1)),
            "reduction": int(arow["decode_reduction"]),
            "same_geometry": ta == tf and a.shape == f.shape})
    return rows


def box_iou(a, b) -> float:
    """IoU of two xyxy boxes."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area else 0.0


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic of two integer samples (max CDF gap)."""
    n = int(max(a.max(initial=0), b.max(initial=0))) + 1
    ca = np.cumsum(np.bincount(a.ravel(), minlength=n)) / max(a.size, 1)
    cb = np.cumsum(np.bincount(b.ravel(), minlength=n)) / max(b.size, 1)
    return float(np.abs(ca - cb).max())


def main() -> None:
    from mammoprep.harmonise.reference import build_reference
    from mammoprep.synth import generate_cohort, parse_size

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=3)
    ap.add_argument("--synth-size", default="4096x3328")
    ap.add_argument("--real", type=int, default=6, help="real mammo_real files to transcode")
    ap.add_argument("--sizes", default="512,1024")
    ap.add_argument("--raw", action="store_true", help="only raw (unharmonised) images")
    ap.add_argument("--no-synth-rows", action="store_true",
                    help="measure only the real images (the cohort still gives the reference)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    salt = b"bench"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_cohort(tmp / "synth", args.patients, seed=0,
                        size=parse_size(args.synth_size), workers=os.cpu_count() or 1)
        ref = None if args.raw else build_reference([tmp / "synth"], salt=salt)[0]
        files = [] if args.no_synth_rows else [
            ("synthetic", to_j2k(f, tmp / "j2k" / f.relative_to(tmp / "synth")))
            for f in sorted((tmp / "synth").rglob("*.dcm"))]
        real = sorted((SHARED / "mammo_real").glob("*.DCM"))[: args.real]
        files += [("real (J2K lossless)", to_j2k(f, tmp / "real" / f.name)) for f in real]
        wg04 = SHARED / "dicom" / "wg04_MG1_J2KI.dcm"
        if wg04.exists():
            files.append(("real wg04 (J2K lossy)", wg04))
        print(f"# decode_scale: {len(files)} images; harmonised to a synthetic low-energy "
              "reference; metrics vs the full decode")
        print("| input | harmonised | size | original | level | decoded | crop ratio | "
              "MAD % full scale | KS | mask IoU | crop IoU |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for label, path in files:
            rows, cols = _header_size(path)
            for reference in ([None] if ref is None else [ref]):
                full = prepared(path, None, reference, salt)
                reduced = {r: prepared(path, r, reference, salt) for r in levels(path) if r}
                for size in sizes:
                    for r, got in reduced.items():
                        if got is None:
                            continue
                        m = compare(full[0], got[0], size, full[1])
                        if m["crop_ratio"] < 0.5:
                            break
                        f = 1 << r
                        print(f"| {label} | {'yes' if reference else 'no'} | {size} | "
                              f"{rows}x{cols} | {r} | {-(-rows // f)}x{-(-cols // f)} | "
                              f"{m['crop_ratio']:.2f} | {m['mad_pct']:.3f} | {m['ks']:.4f} | "
                              f"{m['mask_iou']:.4f} | {m['crop_iou']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
