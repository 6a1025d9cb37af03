"""End-to-end `mammoprep shard` throughput per core, beside decoding alone, in one run.

    NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/shard.py [--patients 6] [--size 4096x3328]

Makes a synthetic full-field cohort, transcodes it to two uniform cohorts (uncompressed
explicit VR little endian, and JPEG 2000 lossless), then for each: decode-only time
(``read_dicom`` of every file) and the whole shard pipeline (header scan, decode, text
removal, harmonisation to a low-energy reference, crop, resize to 1024, PNG, tar,
manifests) on ONE process with one Numba thread. Prints images/s per core and the ratio
pipeline / decode. Targets: >= 12 images/s per core uncompressed; <= 1.2x decode on J2K.

Then the same JPEG 2000 cohort with ``--decode-scale auto`` (reduced-resolution decoding)
beside the ``full`` run above, and how much the stored images of the two runs differ
(benchmarks/decode_scale.py ``compare_shards``). Target: auto <= 0.4x the time of full,
stored images within 1 % of full scale.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")


def transcode(src: Path, dst: Path, ts: str | None) -> None:
    """Copy every DICOM of ``src`` into ``dst``, re-encoded as ``ts`` (None = explicit LE)."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    for f in sorted(src.rglob("*.dcm")):
        ds = pydicom.dcmread(f)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        if ts:
            ds.compress(ts)
        else:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out)


def main() -> None:
    import numba
    import numpy as np
    from pydicom.uid import JPEG2000Lossless

    from mammoprep.io.dicom import read_dicom
    from mammoprep.pipeline import PrepConfig
    from mammoprep.harmonise.reference import build_reference
    from mammoprep.shards.schema import ShardConfig
    from mammoprep.shards.write import build_shards
    from mammoprep.synth import generate_cohort, parse_size

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=6)
    ap.add_argument("--size", default="4096x3328")
    args = ap.parse_args()
    numba.set_num_threads(1)
    salt = b"bench"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        generate_cohort(tmp / "synth", args.patients, seed=0, size=parse_size(args.size),
                        workers=os.cpu_count() or 1)
        ref, _ = build_reference([tmp / "synth"], salt=salt)
        ref.save(tmp / "ref.npz")
        cohorts = {"uncompressed": None, "jpeg2000-lossless": JPEG2000Lossless}
        for name, ts in cohorts.items():
            transcode(tmp / "synth", tmp / name, ts)
        print(f"# setup {time.perf_counter() - t:.0f} s; {args.size}, "
              f"{len(list((tmp / 'synth').rglob('*.dcm')))} images per cohort, 1 process, "
              "1 Numba thread")
        print("| input | decode only ms/img | shard pipeline ms/img | pipeline / decode | "
              "images/s per core |")
        print("|---|---|---|---|---|")
        warm = next((tmp / "uncompressed").rglob("*.dcm"))
        cfg = ShardConfig(prep=PrepConfig(reference=str(tmp / "ref.npz"), size=1024),
                          samples_per_shard=16, folds=0)
        build_shards([str(warm)], tmp / "warm", cfg, salt)  # JIT/cache warm-up
        for name in cohorts:
            files = sorted((tmp / name).rglob("*.dcm"))
            for f in files[:2]:
                read_dicom(f, salt=salt)
            t = time.perf_counter()
            for f in files:
                read_dicom(f, salt=salt)
            dec = (time.perf_counter() - t) / len(files)
            t = time.perf_counter()
            s = build_shards([str(tmp / name)], tmp / f"out-{name}", cfg, salt)
            pipe = (time.perf_counter() - t) / s["images"]
            print(f"| {name} | {dec * 1000:.0f} | {pipe * 1000:.0f} | {pipe / dec:.2f}x | "
                  f"{1 / pipe:.1f} |")
            if name == "jpeg2000-lossless":
                full_pipe = pipe
        auto_cfg = ShardConfig(prep=PrepConfig(reference=str(tmp / "ref.npz"), size=1024,
                                               decode_scale="auto"),
                               samples_per_shard=16, folds=0)
        t = time.perf_counter()
        s = build_shards([str(tmp / "jpeg2000-lossless")], tmp / "out-auto", auto_cfg, salt)
        auto_pipe = (time.perf_counter() - t) / s["images"]
        print(f"| jpeg2000-lossless, --decode-scale auto | | {auto_pipe * 1000:.0f} | | "
              f"{1 / auto_pipe:.1f} |")
        print(f"\nshard --size 1024 on JPEG 2000 lossless: auto / full = "
              f"{auto_pipe / full_pipe:.2f}x the time ({full_pipe / auto_pipe:.1f}x faster; "
              "target <= 0.4x)")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from collections import Counter

        from decode_scale import compare_shards

        rows = compare_shards(tmp / "out-jpeg2000-lossless", tmp / "out-auto")
        mad = [r["mad_pct"] for r in rows]
        levels = dict(sorted(Counter(r["reduction"] for r in rows).items()))
        print(f"stored images auto vs full ({len(rows)}; images per decode level {levels}): "
              f"MAD on the foreground mean {np.mean(mad):.3f} % / max {np.max(mad):.3f} % of "
              f"full scale (target < 1 %); KS max {max(r['ks'] for r in rows):.4f}; mask IoU "
              f"min {min(r['mask_iou'] for r in rows):.4f}; identical stored size and "
              f"transform: {sum(r['same_geometry'] for r in rows)} of {len(rows)}")


if __name__ == "__main__":
    main()
