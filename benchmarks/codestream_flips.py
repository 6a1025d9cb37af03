"""What single bit flips in a compressed codestream do: rejected, decoded wrong, or harmless.

    .venv/bin/python benchmarks/codestream_flips.py [--flips 200] [--seed 12] [--crop 1024]

Encodes (a centre crop of) a real 12-bit mammogram from ``../shared/testdata/mammo_real`` as
a JPEG 2000 lossless and a JPEG-LS lossless codestream, flips ``--flips`` single bits at
random positions of each (bit position uniform over the codestream, fixed seed), writes
each as a DICOM file and reads it with :func:`mammoprep.io.dicom.read_dicom` (default
decoder order). Each outcome is one of

* rejected, by what caught it: ``structure`` (markers, J2K tile-part chain, end marker),
  ``header`` (codestream header disagrees with the DICOM header), ``decoder`` (the codec
  raised), ``warning`` (the codec warned), ``other`` (a later plausibility check);
* ``decoded-wrong``: pixels returned that differ from the original (undetected);
* ``decoded-identical``: the flip did not change the pixels (padding, unused bits).

The fractions go into benchmarks/RESULTS.md and README ("What a corrupt codestream does").
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "testdata" / "mammo_real"
OUTCOMES = ("structure", "header", "decoder", "warning", "other", "decoded-wrong",
            "decoded-identical")


def classify(err) -> str:
    """Which check rejected the file (see the module docstring)."""
    text = str(err)
    if "warned:" in text:
        return "warning"
    if "could not decode the pixel data" in text:
        return "decoder"
    if "header disagrees" in text or "precision does not fit" in text:
        return "header"
    if "codestream is corrupt" in text or "end marker" in text:
        return "structure"
    return "other"


def flip_outcomes(ds, px: np.ndarray, ts: str, stream: bytes, flips: int, seed: int,
                  folder: Path) -> Counter:
    """Counter of outcomes over ``flips`` random single-bit flips of ``stream``."""
    from pydicom.encaps import encapsulate

    from mammoprep.io.dicom import safe_read

    rng = np.random.default_rng(seed)
    counts: Counter = Counter()
    for k in range(flips):
        bit = int(rng.integers(len(stream) * 8))
        bad = bytearray(stream)
        bad[bit // 8] ^= 1 << (bit % 8)
        out = copy.deepcopy(ds)
        out.file_meta.TransferSyntaxUID = ts
        out.PixelData = encapsulate([bytes(bad)])
        out["PixelData"].VR = "OB"
        path = folder / f"flip_{k}.dcm"
        out.save_as(path, enforce_file_format=True)
        rec, err = safe_read(path)
        if err is not None:
            counts[classify(err)] += 1
        else:
            same = rec.pixels.shape == px.shape and np.array_equal(rec.pixels, px)
            counts["decoded-identical" if same else "decoded-wrong"] += 1
        path.unlink()
    return counts


def main() -> None:
    import imagecodecs

    from mammoprep.io.header import open_dataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flips", type=int, default=200)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--crop", type=int, default=1024,
                    help="centre crop side in pixels (0: the whole image)")
    args = ap.parse_args()
    src = sorted(REAL.glob("*.DCM"))[0]
    ds, _ = open_dataset(src, header_only=False)
    px = ds.pixel_array.astype(np.uint16)
    if args.crop:
        r0, c0 = (px.shape[0] - args.crop) // 2, (px.shape[1] - args.crop) // 2
        px = np.ascontiguousarray(px[r0:r0 + args.crop, c0:c0 + args.crop])
    ds.Rows, ds.Columns = px.shape
    bits = int(ds.BitsStored)
    streams = {
        "JPEG 2000 lossless": ("1.2.840.10008.1.2.4.90", bytes(imagecodecs.jpeg2k_encode(
            px, codecformat="J2K", level=0, reversible=True, bitspersample=bits))),
        "JPEG-LS lossless": ("1.2.840.10008.1.2.4.80", bytes(imagecodecs.jpegls_encode(px))),
    }
    print(f"{src.name}: {px.shape[0]}x{px.shape[1]} {bits}-bit, {args.flips} flips per "
          f"codestream, seed {args.seed}")
    print("| codestream | bytes | " + " | ".join(OUTCOMES) + " | rejected |")
    print("|---|---:|" + "---:|" * (len(OUTCOMES) + 1))
    with tempfile.TemporaryDirectory() as tmp:
        for name, (ts, stream) in streams.items():
            c = flip_outcomes(ds, px, ts, stream, args.flips, args.seed, Path(tmp))
            rejected = sum(c[k] for k in OUTCOMES[:5])
            cells = " | ".join(f"{c[k] / args.flips:.1%}" for k in OUTCOMES)
            print(f"| {name} | {len(stream)} | {cells} | {rejected / args.flips:.1%} |",
                  flush=True)


if __name__ == "__main__":
    main()
