"""Peak memory of one worker reading and harmonising one full-field image.

    .venv/bin/python benchmarks/memory.py [--rows 4096 --cols 3328] [--codecs raw,jpegls,j2k]

Writes one ``rows x cols`` 12-bit image per codec (a real mammogram from
``../shared/testdata/mammo_real``, tiled up to the size; uncompressed, JPEG-LS lossless,
JPEG 2000 lossless) into a temporary folder, then for each runs a fresh Python subprocess
that imports everything, builds a reference and warms up on a tiny image of the same codec
(JIT compilation, codec libraries, first-call allocations), and only then reads the big file
with :func:`mammoprep.io.dicom.read_dicom` and runs the harmonise pipeline steps
(:func:`mammoprep.segmentation.foreground.remove_text`, :func:`mammoprep.harmonise.match.harmonize`). It prints
the peak RSS growth over that one image (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after
minus before) as a multiple of the decoded image, ``rows * cols * 2`` bytes.

``ru_maxrss`` is the process high-water mark: the growth is an upper bound for what one
worker adds on top of its warmed-up baseline while it holds one image (with ``-j N``, N
times that). tests/prep/test_codestreams.py asserts a bound on the same measurement
(:func:`measure`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "testdata" / "mammo_real"

#: Transfer syntax per codec name.
CODECS = {"raw": "1.2.840.10008.1.2.1", "jpegls": "1.2.840.10008.1.2.4.80",
          "j2k": "1.2.840.10008.1.2.4.90"}

_CHILD = r"""
import json, resource, sys
import numpy as np
from mammoprep.io.dicom import read_dicom
from mammoprep.segmentation.foreground import remove_text
from mammoprep.harmonise.match import Reference, harmonize

big, tiny = sys.argv[1], sys.argv[2]

def step(path, ref):
    rec = remove_text(read_dicom(path), keep_suspect=True)
    return harmonize(rec, ref)

warm = read_dicom(tiny)
ref = Reference.from_images([warm.pixels], bits=12)
step(tiny, ref)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = step(big, ref)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
rows, cols = out.meta["rows"], out.meta["columns"]
print(json.dumps({"growth": after - before, "image": rows * cols * 2,
                  "decoder": out.meta["decoder"]}))
"""


def real_image(rows: int, cols: int):
    """``(dataset, uint16 [rows, cols])``: the first real mammogram, tiled (mirrored) up to
    the size; the dataset keeps its header (Rows/Columns/PixelData set per file)."""
    import numpy as np

    from mammoprep.io.header import open_dataset

    src = sorted(REAL.glob("*.DCM"))[0]
    ds, _ = open_dataset(src, header_only=False)
    px = ds.pixel_array.astype(np.uint16)
    reps = (-(-rows // px.shape[0]) + 1, -(-cols // px.shape[1]) + 1)
    tiled = np.block([[px if (i + j) % 2 == 0 else px[:, ::-1] for j in range(reps[1])]
                      for i in range(reps[0])])
    return ds, np.ascontiguousarray(tiled[:rows, :cols])


def write(ds, px, codec: str, path: Path) -> Path:
    """``px`` as a DICOM file of ``codec`` (see :data:`CODECS`) at ``path``."""
    import copy

    import imagecodecs
    from pydicom.encaps import encapsulate

    out = copy.deepcopy(ds)
    out.Rows, out.Columns = px.shape
    ts = CODECS[codec]
    out.file_meta.TransferSyntaxUID = ts
    if codec == "raw":
        out.PixelData = px.tobytes()
        out["PixelData"].VR = "OW"
    else:
        bits = int(ds.BitsStored)
        frame = (imagecodecs.jpegls_encode(px) if codec == "jpegls" else
                 imagecodecs.jpeg2k_encode(px, codecformat="J2K", level=0, reversible=True,
                                           bitspersample=bits))
        out.PixelData = encapsulate([bytes(frame)])
        out["PixelData"].VR = "OB"
    out.save_as(path, enforce_file_format=True)
    return path


def measure(big: Path, tiny: Path) -> dict:
    """Run the child on ``big`` after warming on ``tiny``; {growth, image, decoder}."""
    res = subprocess.run([sys.executable, "-c", _CHILD, str(big), str(tiny)], cwd=REPO,
                         capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"memory child failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=3328)
    ap.add_argument("--codecs", default="raw,jpegls,j2k")
    args = ap.parse_args()
    ds, px = real_image(args.rows, args.cols)
    print(f"image {args.rows}x{args.cols}, 12-bit, decoded {px.nbytes / 2**20:.1f} MiB")
    with tempfile.TemporaryDirectory() as tmp:
        for codec in args.codecs.split(","):
            big = write(ds, px, codec, Path(tmp) / f"big_{codec}.dcm")
            tiny = write(ds, px[::16, ::16].copy(), codec, Path(tmp) / f"tiny_{codec}.dcm")
            r = measure(big, tiny)
            print(f"{codec:7s} file {big.stat().st_size / 2**20:6.1f} MiB  decoder "
                  f"{r['decoder']:14s} peak RSS growth {r['growth'] / 2**20:7.1f} MiB = "
                  f"{r['growth'] / r['image']:.2f} x decoded image")


if __name__ == "__main__":
    main()
