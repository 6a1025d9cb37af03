"""The parts behind `harmonize`'s in-process pipeline, each against what it replaced.

    NUMBA_CACHE_DIR=.numba_cache .venv/bin/python benchmarks/startup_io.py [--files 10]

One 4096x3328 uint16 image (27 MB), measured in this run:

* **masking pass**: ``kernels.mask_range`` (clear the unused high bits and find the range
  while copying a read-only view) against NumPy's copy + ``bitwise_and`` + ``min`` + ``max``
  (best of 7, ms);
* **writing**: CPU of the writing thread (``time.thread_time``) for ``--files`` files of
  header + pixels, buffered write + fsync against ``atomic.write_parts`` (O_DIRECT from an
  aligned buffer, then fsync), median ms per file;
* **fresh arrays**: two copies into new 27 MB arrays, in a fresh process with and without
  ``runtime.keep_freed_images`` (median of 10, ms);
* **start-up**: a fresh interpreter importing the chain and running text removal on a tiny
  image, with and without ``runtime.prepare_process`` (the BLAS probe skipped), and with
  the garbage collector paused as well (``runtime.start_up`` / ``started``), best of 3;
* **window**: the derived DICOM's window and Bits Stored from a harmonised full-size image
  of the synthetic cohort: its foreground histogram counted (what the writer did) against
  the harmonisation histogram carried through the LUT (``harmonize.carried_histogram``),
  best of 7, ms;
* **exit**: `mammoprep harmonize` of one file as the console script (leaves with
  ``os._exit``) against the same call through ``main([...])`` (Python's normal teardown),
  best of 3 wall seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

SHAPE = (4096, 3328)


def best(fn, n: int = 7) -> float:
    """Best wall time of ``fn()``, ms, after one warm-up call."""
    fn()
    out = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t)
    return out * 1000


def masking(img: np.ndarray) -> tuple[float, float]:
    from mammoprep import kernels

    view = np.frombuffer(img.tobytes(), "<u2").reshape(img.shape)  # read-only, like a file

    def numpy_way():
        s = view.copy()
        np.bitwise_and(s, np.uint16(4095), out=s)
        return s.min(), s.max()

    return best(numpy_way), best(lambda: kernels.mask_range(view, 12))


def writing(img: np.ndarray, folder: Path, files: int) -> tuple[float, float]:
    from mammoprep.atomic import write_parts

    head = bytes(1200)
    pixels = memoryview(img).cast("B")

    def buffered(path: Path) -> None:
        with open(path, "wb") as fh:
            fh.write(head)
            fh.write(pixels)
            fh.flush()
            os.fsync(fh.fileno())

    cpu = {}
    for name, fn in (("buffered", buffered),
                     ("direct", lambda p: write_parts(p, [head, pixels]))):
        got = []
        for i in range(files):
            c = time.thread_time()
            fn(folder / f"{name}{i}.bin")
            got.append((time.thread_time() - c) * 1000)
        cpu[name] = statistics.median(got)
        for i in range(files):
            (folder / f"{name}{i}.bin").unlink()
    return cpu["buffered"], cpu["direct"]


def _child(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, env=os.environ)
    if r.returncode:
        sys.exit(r.stderr)
    return r.stdout.strip()


def fresh_arrays(tuned: bool) -> float:
    return float(_child(f"""
        import statistics, time, numpy as np
        from mammoprep import runtime
        if {tuned}:
            assert runtime.keep_freed_images()
        a = np.random.default_rng(0).integers(0, 4096, {SHAPE}, dtype=np.uint16)
        got = []
        for _ in range(10):
            t = time.perf_counter(); b = a.copy(); c = a.copy()
            got.append((time.perf_counter() - t) * 1000); del b, c
        print(statistics.median(got[1:]))
    """))


def start_up(prepared: bool, paused: bool = False) -> float:
    code = f"""
        import time; t0 = time.perf_counter()
        if {paused}:
            from mammoprep.runtime import start_up; start_up()
        if {prepared}:
            from mammoprep.runtime import prepare_process; prepare_process()
        import numpy as np
        from mammoprep.segmentation.foreground import remove_text
        from mammoprep.record import Record
        yy, xx = np.mgrid[:128, :96]
        px = np.where(((yy - 64) / 60.0) ** 2 + (xx / 80.0) ** 2 < 1,
                      600 + (yy * 13 + xx * 7) % 900, 0).astype(np.uint16)
        remove_text(Record(px, {{"bits_stored": 12, "steps": ["decode"]}}), keep_suspect=True)
        if {paused}:
            from mammoprep.runtime import started; started()
        print(time.perf_counter() - t0)
    """
    return min(float(_child(code)) for _ in range(3))


def window(f: str, ref: Path) -> tuple[float, float]:
    """(counted, carried) ms for the foreground histogram the derived writer takes its
    window and Bits Stored from, for ``f`` harmonised to ``ref``."""
    from mammoprep.harmonise.match import Reference, _harmonized, carried_histogram, match_lut
    from mammoprep.histogram import foreground_histogram
    from mammoprep.pipeline import PrepConfig, prepared, preprocess

    reference = Reference.load(ref)
    rec = preprocess(f, prepared(PrepConfig(reference=str(ref))))
    px = rec.pixels
    y0, x0, y1, x1 = rec.meta["breast_bbox"]
    src = preprocess(f, prepared(PrepConfig())).pixels[y0:y1, x0:x1]
    hist = foreground_histogram(src, 16)
    top = int(np.flatnonzero(hist)[-1])
    lut = match_lut(hist[:top + 1], reference.cdf)
    carried = carried_histogram(hist[:top + 1], lut, 1 << reference.bits)
    counted = foreground_histogram(px, 16)
    assert np.array_equal(counted[:len(carried)], carried) and not counted[len(carried):].any()
    assert np.array_equal(_harmonized(src, reference)[1], carried)

    def count():
        return foreground_histogram(px, int(px.max()).bit_length())

    return best(count), best(lambda: carried_histogram(hist[:top + 1], lut,
                                                       1 << reference.bits))


def cohort(tmp: Path) -> tuple[str, Path]:
    """One synthetic 4096x3328 DICOM and a reference of its cohort."""
    from mammoprep.synth import generate_cohort

    generate_cohort(tmp / "c", patients=1, seed=3, size=SHAPE)
    f = str(sorted((tmp / "c").rglob("*.dcm"))[0])
    subprocess.run([str(Path(sys.executable).parent / "mammoprep"), "reference",
                    str(tmp / "c"), "-o", str(tmp / "r.npz"), "--energy", "any"],
                   check=True, capture_output=True)
    return f, tmp / "r.npz"


def exits(tmp: Path, f: str) -> tuple[float, float]:
    """(console script, main([...])) best wall seconds for `harmonize` of one image."""
    args = ["--no-progress", "harmonize", "--ref", str(tmp / "r.npz"), f, "-o"]
    script = [str(Path(sys.executable).parent / "mammoprep"), *args]
    call = [sys.executable, "-c", "import sys; from mammoprep.cli import main; "
            "main(sys.argv[1:])", *args]
    out = {}
    for name, cmd in (("script", script), ("main", call)):
        times = []
        for i in range(3):
            t = time.perf_counter()
            subprocess.run([*cmd, str(tmp / f"{name}{i}")], check=True, capture_output=True)
            times.append(time.perf_counter() - t)
        out[name] = min(times)
    return out["script"], out["main"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10)
    args = ap.parse_args()
    os.environ.setdefault("MAMMOPREP_SALT", "bench-salt-not-secret")
    img = np.random.default_rng(1).integers(0, 4096, SHAPE, dtype=np.uint16)
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        tmp = Path(tmp)
        m_np, m_nb = masking(img)
        w_buf, w_dir = writing(img, tmp, args.files)
        a_plain, a_tuned = fresh_arrays(False), fresh_arrays(True)
        s_plain, s_prep, s_paused = start_up(False), start_up(True), start_up(True, True)
        f, ref = cohort(tmp)
        w_count, w_carry = window(f, ref)
        e_script, e_main = exits(tmp, f)
    print("| part | before | after | gain |\n|---|---|---|---|")
    print(f"| masking pass, ms | {m_np:.1f} (NumPy copy + and + min + max) | {m_nb:.1f} "
          f"(`mask_range`) | {m_np / m_nb:.1f}x |")
    print(f"| writing 27 MB + fsync, CPU ms of the writing thread (median of {args.files}) | "
          f"{w_buf:.1f} (buffered) | {w_dir:.1f} (`write_parts`, O_DIRECT) | "
          f"{w_buf / w_dir:.1f}x |")
    print(f"| two copies into fresh 27 MB arrays, ms | {a_plain:.1f} | {a_tuned:.1f} "
          f"(`keep_freed_images`) | {a_plain / a_tuned:.1f}x |")
    print(f"| start-up to the first kernel call, s | {s_plain:.3f} | {s_prep:.3f} "
          f"(`prepare_process`) | {s_plain - s_prep:.3f} s less |")
    print(f"| start-up to the first kernel call, s | {s_prep:.3f} (`prepare_process`) | "
          f"{s_paused:.3f} (and the collector paused: `start_up`) | "
          f"{s_prep - s_paused:.3f} s less |")
    print(f"| derived DICOM window, ms per image | {w_count:.2f} (foreground histogram "
          f"counted) | {w_carry:.2f} (carried through the LUT) | {w_count / w_carry:.0f}x |")
    print(f"| `harmonize` of one image, process wall s | {e_main:.3f} (`main([...])`, "
          f"normal exit) | {e_script:.3f} (console script, `os._exit`) | "
          f"{e_main - e_script:.3f} s less |")


if __name__ == "__main__":
    main()
