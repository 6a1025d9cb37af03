"""Process set-up for the commands that push full-size images through the kernels.

Costs that are not the images' (measured by ``benchmarks/startup_io.py``, recorded in
``benchmarks/RESULTS.md``):

* **Fresh pages per image.** A 4096x3328 ``uint16`` image is 27 MB. glibc serves blocks
  that large with ``mmap`` and returns them at ``free``, so every new image array (file
  bytes, masked copy, text-free copy, matched copy) is zero-filled page by page by the
  kernel again: two copies into fresh arrays took 2.3-2.4x as long as with the blocks kept.
  :func:`keep_freed_images` raises glibc's mmap and trim thresholds so freed images stay in
  the heap and the next image reuses their pages.
* **One malloc arena.** glibc gives each new thread its own arena, a chain of 64 MB heaps,
  and deletes a heap (``munmap``) as soon as everything in it is freed, whatever the trim
  threshold. The reader thread's decoded image, freed by the kernels' thread, emptied its
  heap every file, so the next file faulted in 27 MB of fresh (huge) pages again:
  ``perf`` put 19 % of a 24-image `harmonize` run in the kernel's page clearing. With all
  threads in the main arena (``M_ARENA_MAX`` 1) that share fell to 1.7 %, and the run's
  system time halved (benchmarks/RESULTS.md). The threads that allocate here are a few
  stage threads handing whole images to each other, so they rarely wait for the one
  arena's lock (not measured on its own: the runs as a whole got faster).
* **Numba's BLAS probe.** When Numba first loads a kernel it imports its NumPy support, which
  probes for a BLAS by importing ``scipy.linalg`` (0.12-0.15 s here). mammoprep's kernels
  use no linear algebra; :func:`load_kernels_without_blas_probe` hides SciPy for that one
  import so the probe fails fast (Numba then reports no BLAS, which only matters to
  ``np.dot``-like code, none of which is ours), and SciPy imports normally afterwards.
* **NumPy's BLAS threads.** NumPy's bundled OpenBLAS starts a thread per extra core when
  NumPy is imported, and each spins before it sleeps: 0.1 CPU s of the other core during
  `harmonize`'s start-up here (`perf`). mammoprep does no linear algebra, so the console
  script asks for one BLAS thread (:func:`one_blas_thread`) unless the user has set it.
* **Garbage collection during start-up.** Importing Numba and pydicom and loading the
  kernels creates about 180,000 long-lived objects (177,572 frozen at the end of a
  `harmonize -j 1` start-up), and Python's cyclic collector walks
  them again and again while they are made. :func:`start_up` pauses it until
  :func:`started` freezes what exists by then out of later collections (``gc.freeze``) and
  resumes it.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from contextlib import contextmanager
from typing import Iterator

#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: The largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2): images up to
#: this size are served from the heap.
MMAP_THRESHOLD = 32 << 20
#: Free heap memory above this is returned to the system.
TRIM_THRESHOLD = 512 << 20

_tuned = False


def keep_freed_images() -> bool:
    """Let freed image-sized blocks (up to :data:`MMAP_THRESHOLD`) be reused instead of
    returned to the system, by every thread: one malloc arena (see the module docstring),
    so call it before the process starts its stage threads. The settings are process-wide
    and stay for the process's life: meant for mammoprep's own commands and workers, whose
    few threads hand whole images to each other (a host program with many allocating
    threads would share that one arena). Once per process; True if glibc accepted it (False
    elsewhere: other C libraries are left as they are)."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _tuned = all([mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                  mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD), mallopt(_M_ARENA_MAX, 1)])
    return _tuned


@contextmanager
def load_kernels_without_blas_probe() -> Iterator[None]:
    """Inside: Numba's first kernel load does not import SciPy (see the module docstring).

    Does nothing when SciPy or Numba's NumPy support is already imported."""
    hide = "scipy" not in sys.modules and "numba.np.arraymath" not in sys.modules
    if hide:
        sys.modules["scipy"] = None  # type: ignore[assignment]  # import scipy -> ImportError
    try:
        yield
    finally:
        if hide and sys.modules.get("scipy", 0) is None:
            del sys.modules["scipy"]


def prepare_process(threads: int | None = None) -> None:
    """Per process, before the first image: allocator tuning, ``threads`` Numba threads
    (None: Numba's default), and Numba's NumPy support loaded without the BLAS probe."""
    keep_freed_images()
    with load_kernels_without_blas_probe():
        import numba

        if threads:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        from numba.np import arraymath  # noqa: F401 - what the first kernel load imports


#: The environment variables that size the BLAS thread pools NumPy may bring (OpenBLAS, or
#: an MKL / BLIS build).
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def one_blas_thread() -> bool:
    """Before NumPy is imported: one BLAS thread, for each BLAS thread-count variable the
    user has not set. False (and nothing changed) once NumPy is loaded, when it is too
    late to matter."""
    import os

    if "numpy" in sys.modules:
        return False
    for name in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    return True


_paused = False


def start_up() -> None:
    """Pause cyclic garbage collection for the imports before the first image (see the
    module docstring); :func:`started` resumes it. Does nothing if it is already off."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def started() -> None:
    """End of :func:`start_up`: the objects alive now are left out of later collections
    and collection resumes (only if :func:`start_up` paused it). Safe to call twice."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
