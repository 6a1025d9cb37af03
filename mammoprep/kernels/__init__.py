"""Numba kernels for foreground extraction and histogram matching, each with a NumPy twin.

Every kernel ``name`` is ``@numba.njit(cache=True, nogil=True)`` (it releases the GIL, so
reader and writer threads run while it works); ``name_np`` is a plain NumPy/SciPy
implementation of the same contract. ``tests/prep/test_harmonize.py`` and
``tests/prep/test_foreground.py`` assert that the two give identical output. The library calls
the Numba versions; the twins document the maths and serve as the test oracle.

The full-image kernels (``histogram_u16``, ``apply_lut``, ``block_mean``,
``mask_foreground``) are ``parallel=True`` over rows, but run single-threaded below
:data:`PARALLEL_MIN_PIXELS`; their per-row work lives in small serial helpers (``_*_rows``),
and they allocate through serial helpers, because inside a parallel function even
``np.zeros`` becomes a (thread-waking) parallel loop. Thread count: ``NUMBA_NUM_THREADS``;
in multi-process pipelines (one process per core) set it to 1 to avoid oversubscription.

Conventions: images are ``uint16 [rows, cols]``; masks are ``bool [rows, cols]``;
"downsampled" arrays have one element per ``f x f`` block of the full image (the last block
row/column may be partial).

The kernels live by concern in :mod:`.values` (histograms, CDF matching, stored-value range,
lookup tables), :mod:`.masks` (block means, morphology, components, the final masking pass)
and :mod:`.resample` (reduced-resolution JPEG 2000); this package exposes them all, so
callers write ``kernels.histogram_u16``.
"""

from __future__ import annotations

from ._base import PARALLEL_MIN_PIXELS
from .values import (  # noqa: F401 - the package is the kernels' namespace
    histogram_u16, histogram_u16_np, match_sweep, match_sweep_np, mask_range, mask_range_np,
    apply_lut, apply_lut_np)
from .masks import (  # noqa: F401 - the package is the kernels' namespace
    block_mean, block_mean_np, dilate_square, dilate_square_np, erode_square, erode_square_np,
    largest_component, largest_component_np, fill_holes, fill_holes_np, propagate,
    propagate_np, mask_foreground, upsample_codes_np, mask_foreground_np)
from .resample import (  # noqa: F401 - the package is the kernels' namespace
    shift_bilinear, shift_bilinear_np)

__all__ = [
    "PARALLEL_MIN_PIXELS", "apply_lut", "apply_lut_np", "block_mean", "block_mean_np",
    "dilate_square", "dilate_square_np", "erode_square", "erode_square_np", "fill_holes",
    "fill_holes_np", "histogram_u16", "histogram_u16_np", "largest_component",
    "largest_component_np", "mask_foreground", "mask_foreground_np", "mask_range",
    "mask_range_np", "match_sweep", "match_sweep_np", "propagate", "propagate_np",
    "shift_bilinear", "shift_bilinear_np", "upsample_codes_np"
]
