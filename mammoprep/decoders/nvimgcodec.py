"""JPEG 2000 and HTJ2K lossless on an NVIDIA GPU through nvImageCodec (nvJPEG2000).

Used first when a CUDA device, ``nvidia-nvimgcodec-cu13`` (or ``-cu12``) and the
nvJPEG2000 wheel are present (``pip install 'mammoprep[gpu]'``); elsewhere it is simply not
available and the CPU plug-ins decode. Only the lossless transfer syntaxes are registered,
so its pixels equal the CPU decoders' (tests check, on a GPU); lossy JPEG 2000 stays with the
CPU plug-ins (the irreversible wavelet may round differently on the GPU), as lossy JPEG
does. nvImageCodec has no reduced-resolution decoding, so this plug-in always decodes the
full image (it offers no ``reductions``); where it is available it is used even when a
reduced decode was asked for (``FULL_BEATS_REDUCED``): the issue's target is >= 20x one CPU
core for a full decode, against ~4x for one level dropped on the CPU.

Availability is checked without importing nvImageCodec first (its import prints errors when
a codec library is missing): the CUDA driver must report a device and the nvImageCodec and
nvJPEG2000 modules must be installed.
"""

from __future__ import annotations

import ctypes
import importlib.util
from functools import lru_cache

import numpy as np

from . import Unsupported, single_frame_bytes

REQUIRES = ("an NVIDIA GPU with its driver, and pip install 'mammoprep[gpu]' "
            "(nvidia-nvimgcodec-cu13, nvidia-nvjpeg2k-cu13)")
#: Lossless JPEG 2000 and HTJ2K (lossless, RPCL lossless).
TRANSFER_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201",
                               "1.2.840.10008.1.2.4.202"})
#: A full decode here beats a reduced CPU decode: ``decode_at_least`` uses this plug-in (at
#: full size) when it is available, rather than the CPU reduced-resolution plug-in.
FULL_BEATS_REDUCED = True
#: What :func:`decode` accepts when called directly (tests compare lossy within tolerance).
DECODES = TRANSFER_SYNTAXES | {"1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.203"}


def cuda_device_count() -> int:
    """CUDA devices the driver reports (0 without a driver or a device)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def is_available() -> bool:
    import ctypes.util

    nvjpeg2k = _installed("nvidia.nvjpeg2k") or ctypes.util.find_library("nvjpeg2k")
    if not (_installed("nvidia.nvimgcodec") and nvjpeg2k):
        return False
    return cuda_device_count() > 0


@lru_cache(maxsize=1)
def _decoder():
    from nvidia import nvimgcodec

    return nvimgcodec.Decoder(), nvimgcodec.DecodeParams(
        allow_any_depth=True, color_spec=nvimgcodec.ColorSpec.UNCHANGED,
        apply_exif_orientation=False)


def decode(ds, transfer_syntax: str) -> np.ndarray:
    """Stored values of the single frame, ``[rows, cols]`` uint16 (uint8 for <= 8 bits),
    decoded on the current CUDA device and copied to the host."""
    from nvidia import nvimgcodec

    if transfer_syntax not in DECODES:
        raise Unsupported(f"nvimgcodec plug-in does not decode {transfer_syntax}")
    decoder, params = _decoder()
    image = decoder.decode(nvimgcodec.CodeStream(single_frame_bytes(ds)), params=params)
    if image is None:  # no reason given: a gap or bad data; the CPU plug-ins will tell
        raise Unsupported("nvImageCodec returned no image for the frame")
    arr = np.asarray(image.cpu())
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return np.ascontiguousarray(arr)
