"""Process set-up (mammoprep/runtime.py): the garbage-collection pause and the BLAS
thread count, in fresh interpreters where the state of this one would hide them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest


def _child(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, env={**clean, **env})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_start_up_leaves_a_disabled_collector_alone():
    import gc

    from mammoprep.runtime import start_up, started

    was = gc.isenabled()
    try:
        gc.disable()
        start_up()
        started()
        assert not gc.isenabled()        # the caller turned it off: it stays off
        gc.enable()
        start_up()
        assert not gc.isenabled()
        started()
        started()                        # twice: harmless
        assert gc.isenabled()
    finally:
        gc.enable() if was else gc.disable()


def test_one_blas_thread_only_before_numpy_and_never_over_the_user():
    out = _child("""
        import os
        from mammoprep.runtime import BLAS_THREAD_VARIABLES, one_blas_thread
        assert one_blas_thread()
        print([os.environ[v] for v in BLAS_THREAD_VARIABLES])
        import numpy
        os.environ.pop("BLIS_NUM_THREADS")
        print(one_blas_thread(), "BLIS_NUM_THREADS" in os.environ)
    """, MKL_NUM_THREADS="3")
    first, second = out.splitlines()
    assert first == "['1', '3', '1']"         # the user's MKL choice stays
    assert second == "False False"             # NumPy loaded: too late, nothing changed


def test_console_script_asks_for_one_blas_thread_and_calls_from_code_do_not():
    lines = _child("""
        import os, sys
        import mammoprep.cli as cli
        import mammoprep.runtime as R
        one = R.one_blas_thread
        def traced():
            got = one()
            print("asked", got, os.environ.get("OPENBLAS_NUM_THREADS"), flush=True)
            return got
        R.one_blas_thread = traced
        try:
            cli.main(["--version"])          # a caller's main([...]): left alone
        except SystemExit:
            print("called", os.environ.get("OPENBLAS_NUM_THREADS"), flush=True)
        sys.argv = ["mammoprep", "--version"]
        cli.main()                           # the console script's path
    """).splitlines()
    assert [x for x in lines if x.startswith(("asked", "called"))] == ["called None",
                                                                       "asked True 1"]


def test_pool_forks_only_from_a_process_without_threads_or_numba():
    # a fork after GNU OpenMP (Numba's kernels) has run aborts the child, and one from a
    # process with other threads may inherit a held lock: spawn then
    out = _child("""
        import sys, threading, time
        from mammoprep.commands.harmonize import start_method
        print(start_method())
        t = threading.Thread(target=time.sleep, args=(0.5,)); t.start()
        print(start_method()); t.join()
        import numba
        print(start_method())
    """)
    expected = "fork" if sys.platform.startswith("linux") else "spawn"
    assert out.splitlines() == [expected, "spawn", "spawn"]


REAL_MAMMO = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "mammo_real"
#: A real 3328x2560 FFDM image (JPEG lossless), padded below here to 4096x3328.
BIG_REAL = "DXm_2_25_108645011105767518722872724526265539868.DCM"


def _full_size_copies(folder: Path, n: int) -> None:
    """``n`` uncompressed 4096x3328 12-bit DICOMs (27 MB of pixels each): a real FFDM
    image with background added below and away from the chest wall."""
    import numpy as np
    import pydicom

    src = REAL_MAMMO / BIG_REAL
    if not src.exists():
        pytest.skip(f"real test data not found: {src}")
    ds = pydicom.dcmread(src)
    px = ds.pixel_array
    big = np.zeros((4096, 3328), np.uint16)
    big[:px.shape[0], :px.shape[1]] = px
    if ds.get("ImageLaterality") == "L" or px[:, : px.shape[1] // 8].mean() < \
            px[:, -px.shape[1] // 8:].mean():  # chest wall on the right: keep it there
        big = np.zeros_like(big)
        big[:px.shape[0], -px.shape[1]:] = px
    ds.set_pixel_data(big, "MONOCHROME2", 12)
    folder.mkdir()
    for i in range(n):
        ds.save_as(folder / f"c{i}.dcm")


def test_stage_threads_reuse_freed_images(tmp_path):
    """`harmonize -j 1` over full-size images faults in no fresh memory once running.

    A 4096x3328 image is 27 MB, so two fill one of the 64 MB heaps glibc gives a thread's
    own malloc arena, and glibc unmaps such a heap as soon as it is empty, whatever the trim
    threshold. The reader thread's images, freed by the kernels' thread, emptied a heap
    most files, and the next file faulted 27 MB in again (6,000-8,700 pages per image on
    the development VM). With one arena (:func:`mammoprep.runtime.keep_freed_images`) the
    heap keeps them. NumPy's huge-page advice is switched off so that faults count 4 KiB
    pages."""
    src, out = tmp_path / "in", tmp_path / "out"
    _full_size_copies(src, 8)
    ref = tmp_path / "ref.npz"
    from mammoprep.harmonize import Reference

    Reference.from_histograms([np.r_[0, np.ones(4095, np.int64)]], bits=12).save(ref)
    got = _child(f"""
        import resource
        from numpy._core.multiarray import _set_madvise_hugepage
        _set_madvise_hugepage(False)
        from mammoprep.commands import harmonize as H
        faults, write = [], H._write_one
        def counted(*a, **k):
            row = write(*a, **k)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
            return row
        H._write_one = counted
        from mammoprep.cli import main
        try:
            main(["--no-progress", "harmonize", "-j", "1", "--keep-suspect", "--ref",
                  {str(ref)!r}, {str(src)!r}, "-o", {str(out)!r}], standalone_mode=False)
        finally:
            print(*faults)
        """, NUMBA_NUM_THREADS="1")
    faults = [int(v) for v in got.splitlines()[-1].split()]
    assert len(faults) == 8 and len(list(out.glob("*.dcm"))) == 8
    pages = 4096 * 3328 * 2 // 4096  # one image's worth of fresh 4 KiB pages
    late = faults[-1] - faults[3]    # the last four images, after the heap has grown
    assert late < pages // 4, (late, faults)
