"""What every kernel module shares: the size below which a kernel runs single-threaded,
and SciPy for the NumPy twins."""

from __future__ import annotations

#: Images with fewer pixels than this run single-threaded: waking the thread pool costs
#: more than it saves, and much more on a loaded machine.
PARALLEL_MIN_PIXELS = 1 << 18


def _ndimage():
    """scipy.ndimage, imported only by the NumPy twins (tests), never on the command path."""
    from scipy import ndimage

    return ndimage
