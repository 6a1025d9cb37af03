"""End to end: `mammoprep harmonize` over a folder of full-field DICOMs vs the LUMINA script.

    .venv/bin/python benchmarks/harmonize_folder.py [--patients 3] [--size 4096x3328] [-j 2]

Builds a synthetic cohort (``mammoprep synth``), transcodes it to uncompressed explicit VR
little endian (so that decoding does not hide the difference), builds a low-energy reference,
then times in one run, each over every image (read, match, write a DICOM):

* this project: the ``mammoprep harmonize --ref REF.npz IN -o OUT -j N`` command as a user
  runs it (process start, imports, Numba cache load, process pool, progress bar included);
* the LUMINA script pattern, one process: ``pydicom.dcmread`` + ``pixel_array``, skimage
  ``match_histograms`` of the float32 foreground pixels against one reference image's
  foreground, cast back without rounding, ``PixelData`` replaced, ``save_as``. The reference
  image is loaded once, outside the timing (as the script does).

Prints seconds, images/s and the ratio. Both outputs are checked to be readable DICOMs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from shard import transcode  # noqa: E402

BIN = Path(sys.executable).parent


def lumina_script(files: list[Path], src: Path, dst: Path, ref_path: Path) -> None:
    """The published harmonisation loop (see the module docstring)."""
    import pydicom
    from skimage.exposure import match_histograms

    ref = pydicom.dcmread(ref_path).pixel_array.astype(np.float32)
    ref_fg = ref[ref > 0]
    for f in files:
        ds = pydicom.dcmread(f)
        img = ds.pixel_array.astype(np.float32)
        fg = img > 0
        out = np.zeros(img.shape, np.uint16)
        out[fg] = match_histograms(img[fg], ref_fg).astype(np.uint16)
        ds.PixelData = out.tobytes()
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=3)
    ap.add_argument("--size", default="4096x3328")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    env = {**os.environ, "MAMMOPREP_SALT": "bench-salt"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        subprocess.run([str(BIN / "mammoprep"), "synth", str(tmp / "synth"), "--patients",
                        str(args.patients), "--size", args.size, "-j", str(args.jobs)],
                       check=True, capture_output=True, env=env)
        src = tmp / "unc"
        transcode(tmp / "synth", src, None)
        subprocess.run([str(BIN / "mammoprep"), "reference", str(src), "-o",
                        str(tmp / "ref.npz")], check=True, capture_output=True, env=env)
        files = sorted(src.rglob("*.dcm"))
        # the LUMINA script's single reference: the first low-energy (12-bit) image
        import pydicom

        ref_image = next(f for f in files if int(pydicom.dcmread(
            f, stop_before_pixels=True).BitsStored) == 12)
        print(f"# setup {time.perf_counter() - t:.0f} s: {len(files)} uncompressed "
              f"{args.size} DICOMs, {args.jobs} processes for mammoprep")

        t = time.perf_counter()
        r = subprocess.run([str(BIN / "mammoprep"), "harmonize", "--ref", str(tmp / "ref.npz"),
                            str(src), "-o", str(tmp / "ours"), "-j", str(args.jobs)],
                           capture_output=True, text=True, env=env)
        ours = time.perf_counter() - t
        if r.returncode:
            sys.exit(f"mammoprep harmonize failed:\n{r.stderr}")

        t = time.perf_counter()
        lumina_script(files, src, tmp / "lumina", ref_image)
        theirs = time.perf_counter() - t

        for d in ("ours", "lumina"):
            written = sorted((tmp / d).rglob("*.dcm"))
            assert len(written) == len(files), (d, len(written))
            pydicom.dcmread(written[0]).pixel_array  # readable
        n = len(files)
        print("| pipeline | seconds | images/s | ratio |")
        print("|---|---|---|---|")
        print(f"| LUMINA script (1 process) | {theirs:.1f} | {n / theirs:.2f} | baseline |")
        print(f"| `mammoprep harmonize -j {args.jobs}` | {ours:.1f} | {n / ours:.2f} | "
              f"{theirs / ours:.1f}x faster |")


if __name__ == "__main__":
    main()
