"""JPEG lossless (process 14 and SV1) through libjpeg-turbo, via imagecodecs.

About 5x faster than pylibjpeg-libjpeg on full-field mammograms, identical pixels. Lossy
JPEG is deliberately not registered here: IDCT implementations differ, so pixels would too.
A codestream whose frame is not lossless (SOF3), or whose precision libjpeg-turbo's lossless
mode lacks (2-16 bits), is :class:`~mammoprep.decoders.Unsupported` here (the next plug-in
decodes it); every libjpeg-turbo error on a lossless frame is a data error.
"""

from __future__ import annotations

import numpy as np

from . import Unsupported, single_frame_bytes
from .codestream import CodestreamError, jpeg_frame

REQUIRES = "pip install 'mammoprep[fast]' (imagecodecs)"
TRANSFER_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"})


def is_available() -> bool:
    import imagecodecs

    return bool(getattr(imagecodecs, "JPEG8", None) and imagecodecs.JPEG8.available)


def decode(ds, transfer_syntax: str) -> np.ndarray:
    import imagecodecs

    data = single_frame_bytes(ds)
    try:
        frame = jpeg_frame(data)
    except CodestreamError:
        frame = None  # structure is checked before decoding; libjpeg-turbo reports the rest
    if frame is not None and (frame.marker != "SOF3" or not 2 <= frame.precision <= 16):
        raise Unsupported(f"{frame.marker} frame of {frame.precision} bits (libjpeg-turbo is "
                          "used here for lossless SOF3 frames of 2-16 bits)")
    return imagecodecs.jpeg8_decode(data)
