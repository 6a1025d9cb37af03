"""The default decoder: pydicom's pixel backend with the pylibjpeg plug-ins.

Handles native (implicit/explicit VR, little/big endian), deflated, RLE, JPEG baseline,
extended and lossless, JPEG-LS, JPEG 2000 and HTJ2K.
"""

from __future__ import annotations

import numpy as np

from . import CodecMissing

REQUIRES = ("pydicom + pylibjpeg (installed with mammoprep); JPEG lossless / extended also "
            "need pip install 'mammoprep[gpl]' (pylibjpeg-libjpeg, GPL-3.0), JPEG-LS "
            "pip install pyjpegls")

# Transfer syntaxes this plug-in accepts; pydicom then picks its own codec plug-in.
TRANSFER_SYNTAXES = frozenset({
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.5",
})

# pydicom codec plug-ins preferred per transfer syntax (pylibjpeg is the project default).
_PREFERRED = "pylibjpeg"


def is_available() -> bool:
    import pydicom  # noqa: F401

    return True


def decode(ds, transfer_syntax: str) -> np.ndarray:
    from pydicom.pixels import get_decoder

    decoder = get_decoder(transfer_syntax)
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise CodecMissing(f"pydicom has no codec installed for it ({missing})")
    plugin = _PREFERRED if _PREFERRED in decoder.available_plugins else ""
    # unused high bits are masked once, in place, by mammoprep.io.dicom (unsigned data only
    # reach it); pydicom's own correction would add a copy and two shifts over the image
    arr, _ = decoder.as_array(ds, index=0, decoding_plugin=plugin, as_rgb=False,
                              correct_unused_bits=False)
    return arr
