"""Pooling low-energy histograms of different bit depths: raw levels vs rescaled.

    .venv/bin/python benchmarks/reference_bits.py [--patients 12] [--size 512x416]

Builds a synthetic cohort, then rewrites the low-energy (12-bit) mammograms of its most
frequent low-energy vendor (one tone curve: the tissue distribution is the same) so that one
third is stored at 10 bits (``v >> 2``), one third stays 12-bit and one third is stored at
14 bits (``4 v + dither 0..3``), as an archive mixing detectors would. The same tissue then
sits on levels of three scales. Two references from the same images:

* raw: every foreground histogram pooled on its stored levels at 14 bits (what
  ``mammoprep reference`` did before it rescaled);
* rescaled: ``mammoprep reference`` (each histogram rescaled to 14 bits before pooling).

For each, prints the number of modes of the pooled histogram (64 bins over the 14-bit range,
smoothed with a 3-bin box, a mode = a local maximum above 5 % of the highest bin) and its L1
distance to the truth: the same images all pooled at their original 12 bits (both
normalised, 64 bins over their own range; 0 = same distribution, 2 = disjoint).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def modes(hist: np.ndarray, bins: int = 64) -> int:
    """Local maxima above 5 % of the highest bin of ``hist`` folded into ``bins`` bins and
    smoothed with a 3-bin box."""
    h = np.asarray(hist, dtype=np.float64).copy()
    h[0] = 0
    coarse = h.reshape(bins, -1).sum(axis=1)
    smooth = np.convolve(coarse, np.ones(3) / 3, mode="same")
    top = smooth.max()
    padded = np.concatenate([[0.0], smooth, [0.0]])
    peaks = [i for i in range(1, bins + 1) if padded[i] > padded[i - 1]
             and padded[i] >= padded[i + 1] and padded[i] > 0.05 * top]
    return len(peaks)


def rewrite(src: Path, dst: Path, bits: int, rng: np.random.Generator) -> None:
    """``src`` (12-bit, uncompressed after decoding) stored again at ``bits``."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    from mammoprep.io.dicom import read_dicom

    ds = pydicom.dcmread(src)
    px = read_dicom(src).pixels.astype(np.uint32)  # MONOCHROME2, padding already 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    if bits == 10:
        out = px >> 2
    elif bits == 14:
        out = (px << 2) + rng.integers(0, 4, px.shape) * (px > 0)
    else:
        out = px
    for kw in ("PixelPaddingValue", "RescaleSlope", "RescaleIntercept", "PresentationLUTShape"):
        if kw in ds:
            delattr(ds, kw)
    ds.BitsStored, ds.HighBit = bits, bits - 1
    ds.PixelData = out.astype(np.uint16).tobytes()
    ds["PixelData"].VR = "OW"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=12)
    ap.add_argument("--size", default="512x416")
    args = ap.parse_args()
    os.environ.setdefault("MAMMOPREP_SALT", "bench-salt-0123456789abcdef")
    from mammoprep.io.dicom import read_dicom
    from mammoprep.segmentation.foreground import remove_text
    from mammoprep.harmonise.reference import build_reference
    from mammoprep.synth import generate_cohort, parse_size

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_cohort(tmp / "synth", patients=args.patients, seed=3,
                        size=parse_size(args.size))
        vendor = {f: read_dicom(f).meta["manufacturer"]
                  for f in sorted((tmp / "synth").rglob("*.dcm"))}
        low_vendors = [v for v in vendor.values()
                       if v in ("METALTRONICA", "SIEMENS", "FUJIFILM Corporation")]
        chosen = max(sorted(set(low_vendors)), key=low_vendors.count)
        low = [f for f, v in vendor.items() if v == chosen]
        rng = np.random.default_rng(0)
        mixed = tmp / "mixed"
        depth, low_of = {}, {}
        for i, f in enumerate(low):
            bits = (10, 12, 14)[i % 3]
            dst = mixed / f"{bits}" / f.relative_to(tmp / "synth")
            rewrite(f, dst, bits, rng)
            depth[dst], low_of[dst] = bits, f
        raw = np.zeros(1 << 14, np.int64)
        own12 = np.zeros(1 << 12, np.int64)
        for f, bits in depth.items():
            px = remove_text(read_dicom(f), keep_suspect=True).pixels
            h = np.bincount(px.ravel(), minlength=1 << 14)
            raw += h
            own12 += np.bincount(remove_text(read_dicom(low_of[f]), keep_suspect=True)
                                 .pixels.ravel(), minlength=1 << 12)
        raw[0] = own12[0] = 0  # background
        ref, report = build_reference([mixed], energy=None, keep_suspect=True)

        def dist(hist):
            a = np.asarray(hist, np.float64).reshape(64, -1).sum(axis=1)
            b = own12.astype(np.float64).reshape(64, -1).sum(axis=1)
            return float(np.abs(a / a.sum() - b / b.sum()).sum())

        print(f"# {len(depth)} low-energy {chosen} images {args.size}: "
              f"{report['depths']} (bits: images), pooled at {report['bits']}-bit")
        print("| pooling | modes (64 bins) | L1 to the truth |")
        print("|---|---|---|")
        print(f"| truth: the same images all at 12 bits | {modes(own12)} | 0 |")
        print(f"| raw stored levels (before) | {modes(raw)} | {dist(raw):.2f} |")
        print(f"| rescaled to 14 bits (`mammoprep reference`) | {modes(ref.hist)} | "
              f"{dist(ref.hist):.2f} |")


if __name__ == "__main__":
    sys.exit(main())
