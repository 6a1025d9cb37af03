"""JPEG lossless (process 14 and SV1) through libjpeg-turbo, via imagecodecs.

About 5x faster than pylibjpeg-libjpeg on full-field mammograms, identical pixels. Lossy
JPEG is deliberately not registered here: IDCT implementations differ, so pixels would too.
"""

from __future__ import annotations

import numpy as np

from . import single_frame_bytes

REQUIRES = "pip install 'mammoprep[fast]' (imagecodecs)"
TRANSFER_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"})


def is_available() -> bool:
    import imagecodecs

    return bool(getattr(imagecodecs, "JPEG8", None) and imagecodecs.JPEG8.available)


def decode(ds, transfer_syntax: str) -> np.ndarray:
    import imagecodecs

    return imagecodecs.jpeg8_decode(single_frame_bytes(ds))
