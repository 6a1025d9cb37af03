"""Process set-up (mammoprep/runtime.py): the garbage-collection pause and the BLAS
thread count, in fresh interpreters where the state of this one would hide them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
        from mammoprep.batch import start_method
        print(start_method())
        t = threading.Thread(target=time.sleep, args=(0.5,)); t.start()
        print(start_method()); t.join()
        import numba
        print(start_method())
    """)
    expected = "fork" if sys.platform.startswith("linux") else "spawn"
    assert out.splitlines() == [expected, "spawn", "spawn"]


REAL_MAMMO = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "mammo_real"
#: A real 3328x2560 FFDM image (JPEG lossless), padded below to 4096x3328.
BIG_REAL = "DXm_2_25_108645011105767518722872724526265539868.DCM"


def _full_size_copy(path: Path) -> None:
    """An uncompressed 4096x3328 12-bit DICOM at ``path`` (27 MB of pixels): a real FFDM
    image with background added below and beside it."""
    import numpy as np
    import pydicom

    src = REAL_MAMMO / BIG_REAL
    if not src.exists():
        pytest.skip(f"real test data not found: {src}")
    ds = pydicom.dcmread(src)
    px = ds.pixel_array
    big = np.zeros((4096, 3328), np.uint16)
    big[:px.shape[0], :px.shape[1]] = px
    ds.set_pixel_data(big, "MONOCHROME2", 12)
    ds.save_as(path)


def test_stage_threads_allocate_images_in_the_main_heap(tmp_path):
    """The reader thread's decoded full-size image lives in the main heap once
    :func:`mammoprep.runtime.keep_freed_images` has run, where freed images are kept for
    the next file.

    A 4096x3328 image is 27 MB, so two fill one of the 64 MB heaps glibc gives a thread's
    own malloc arena, and glibc unmaps such a heap as soon as it is empty, whatever the trim
    threshold. The reader thread's images, freed by the kernels' thread, emptied a heap on
    most files, and the next file faulted 27 MB of fresh pages in again (19 % of a
    24-image run's samples in the kernel's page clearing, benchmarks/RESULTS.md). With one
    arena every thread allocates from the main heap (``[heap]`` in /proc/self/maps)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc arenas: Linux only")
    src = tmp_path / "c0.dcm"
    _full_size_copy(src)
    got = _child(f"""
        from mammoprep.runtime import keep_freed_images
        assert keep_freed_images()
        import numpy as np
        from mammoprep.batch import Job
        from mammoprep.runs.harmonize import read_one, stage_threads
        from mammoprep.pipeline import PrepConfig

        reader, writer = stage_threads(2)
        rec, err, header = reader.submit(read_one, Job({str(src)!r}, "out.dcm", "dicom",
                                                       PrepConfig(), b"s" * 16)).result()
        assert err is None, err
        other = writer.submit(np.ones, (4096, 3328), np.uint16).result()
        # the main heap: one or more adjacent [heap] mappings (huge-page advice splits it)
        heap = [[int(v, 16) for v in line.split()[0].split("-")]
                for line in open("/proc/self/maps") if "[heap]" in line]
        lo, hi = heap[0][0], heap[-1][1]
        print(rec.pixels.shape, *(lo <= a.ctypes.data < hi for a in (rec.pixels, other)))
        """)
    assert got.splitlines()[-1] == "(4096, 3328) True True"
