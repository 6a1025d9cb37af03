"""HTJ2K lossless through OpenJPH, via imagecodecs.

About 3x faster than openjpeg (pylibjpeg) on mammograms, identical pixels. Lossy HTJ2K
(.203) is left to the default plug-in: irreversible wavelets may round differently.

OpenJPH decodes only HTJ2K codestreams: a part-1 JPEG 2000 codestream under an HTJ2K transfer
syntax (SIZ Rsiz without bit 14, "HT code-blocks") is
:class:`~mammoprep.decoders.Unsupported` here and decoded by the next plug-in.
"""

from __future__ import annotations

import numpy as np

from . import Unsupported, j2k, single_frame_bytes

REQUIRES = "pip install 'mammoprep[fast]' (imagecodecs)"
TRANSFER_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202"})


def is_available() -> bool:
    import imagecodecs

    return bool(getattr(imagecodecs, "HTJ2K", None) and imagecodecs.HTJ2K.available)


def decode(ds, transfer_syntax: str) -> np.ndarray:
    import imagecodecs

    data = single_frame_bytes(ds)
    if not j2k.is_htj2k(data):
        raise Unsupported("not an HTJ2K codestream (SIZ Rsiz bit 14 clear)")
    return imagecodecs.htj2k_decode(data)
