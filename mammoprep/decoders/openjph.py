"""HTJ2K lossless through OpenJPH, via imagecodecs.

About 3x faster than openjpeg (pylibjpeg) on mammograms, identical pixels. Lossy HTJ2K
(.203) is left to the default plug-in: irreversible wavelets may round differently.
"""

from __future__ import annotations

import numpy as np

from . import single_frame_bytes

REQUIRES = "pip install 'mammoprep[fast]' (imagecodecs)"
TRANSFER_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202"})


def is_available() -> bool:
    import imagecodecs

    return bool(getattr(imagecodecs, "HTJ2K", None) and imagecodecs.HTJ2K.available)


def decode(ds, transfer_syntax: str) -> np.ndarray:
    import imagecodecs

    return imagecodecs.htj2k_decode(single_frame_bytes(ds))
