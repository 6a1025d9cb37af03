"""Pixel-data decoders behind a small registry.

Each plug-in is a module in this package with

* ``TRANSFER_SYNTAXES``: the transfer syntax UIDs it decodes;
* ``REQUIRES``: what to ``pip install`` for it;
* ``is_available() -> bool``;
* ``decode(ds, transfer_syntax) -> np.ndarray``: the stored values of the single frame,
  ``[rows, cols]``, unsigned integer dtype, before any LUT or inversion;
* optionally ``reductions(ds, transfer_syntax) -> tuple[int, ...]`` and a ``reduction=0``
  keyword of ``decode``: a plug-in that can decode at reduced resolution (JPEG 2000: drop the
  last ``r`` wavelet levels) lists the levels it can drop for this frame; the result is then
  ``[ceil(rows / 2**r), ceil(cols / 2**r)]`` and sample ``i`` is original sample ``i * 2**r``
  (:func:`recentre` moves it onto the area grid of the original pixels).

Plug-ins are registered by name and imported lazily. :func:`decode` tries the available
plug-ins for a transfer syntax in priority order (fastest first); every plug-in of a
transfer syntax must give identical pixels (tests check it on real files). When none can
decode, :class:`~mammoprep.errors.NoDecoderError` lists every plug-in and what it needs.

A decoder's error is a verdict on the file, never a reason to ask the next plug-in (a
corrupt JPEG-LS stream that CharLS refuses is decoded "fine" into wrong pixels by
libjpeg): any exception from a plug-in is a :class:`~mammoprep.errors.DecodeError` naming
the plug-in and its message, except :class:`CodecMissing` (the codec library is not
installed) and :class:`Unsupported` (a capability gap the plug-in detected itself: a
precision, a codestream variant, a size rounding it does not handle), after which the next
plug-in is tried. Likewise a warning the codec emits during the call (Python ``warnings``
or ``logging`` records of the codec packages, from the decoding thread) is a reject with
its text, except the benign ones in :data:`ALLOWED_WARNINGS`.
:func:`decode_at_least` asks for "at least R x C": a reducing plug-in drops as many levels
as keep the image at least that large; without one (or if it fails) the full image is
decoded, with the same output contract.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

import numpy as np

from ..errors import DecodeError, NoDecoderError
from ..registry import Registry


@dataclass(frozen=True)
class Plugin:
    """A registered decoder: ``name``, the module holding it, and its priority (low first)."""

    name: str
    module: str
    priority: int


#: The registered decoders by name (:class:`mammoprep.registry.Registry`).
PLUGINS: Registry[Plugin] = Registry("decoder")


class CodecMissing(RuntimeError):
    """Raised by a plug-in's ``decode`` when it claims the transfer syntax but the codec
    library it would use for it is not installed (e.g. JPEG lossless through pydicom
    without pylibjpeg-libjpeg); :func:`decode` then reports a missing decoder, not a
    corrupt file."""


class Unsupported(RuntimeError):
    """Raised by a plug-in's ``decode`` for a capability gap, not a data error: the codec
    cannot handle this (valid) codestream variant, e.g. a precision or a codestream type it
    does not implement, or a reduced size Pillow rounds differently. :func:`decode` then tries
    the next plug-in. A plug-in raises it only after checking the condition itself (never for
    an exception it could not classify)."""


#: Codec packages whose ``logging`` records during a decode call are captured (children
#: included): pydicom's pixel handlers and the pylibjpeg family, CharLS, Pillow, imagecodecs.
CODEC_LOGGERS = ("pydicom", "pylibjpeg", "openjpeg", "libjpeg", "rle", "jpeg_ls", "PIL",
                 "imagecodecs")

#: Warnings during a decode that are not a reject: (regular expression, why it is benign).
#: Empty on purpose: decoding the 27 valid real files of the test data and 80 transcodes of
#: real mammograms (JPEG lossless, JPEG-LS lossless and near-lossless, JPEG 2000 lossless
#: and lossy, HTJ2K, RLE) through every available plug-in raised no warning and no codec
#: log record at all (2026-11, pydicom 3.0, pylibjpeg 2.1, imagecodecs 2026.3, Pillow 13).
#: Add an entry only for a warning observed on a valid file, with the reason.
ALLOWED_WARNINGS: tuple[tuple[str, str], ...] = ()
#: Warning categories about how a library is called, not about the data: never a reject.
API_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ImportWarning,
                ResourceWarning)


def register(name: str, module: str, priority: int) -> None:
    """Register a decoder module (imported lazily) under ``name`` (which must be new)."""
    PLUGINS.register(name, Plugin(name, module, priority))


# Faster codecs first; the pydicom/pylibjpeg plug-in handles every transfer syntax last.
# Native little-endian data: a view of the bytes read, no copy.
register("native", "mammoprep.decoders.native", 1)
register("libjpeg-turbo", "mammoprep.decoders.turbo", 10)
register("charls", "mammoprep.decoders.charls", 10)
register("openjph", "mammoprep.decoders.openjph", 10)
register("pydicom", "mammoprep.decoders.pydicom_plugin", 100)
# Same pixels as pydicom at full resolution; chosen by decode_at_least for reduced decoding.
register("pillow-openjpeg", "mammoprep.decoders.pillow_j2k", 110)
# GPU first where a CUDA device and nvImageCodec are present (lossless J2K / HTJ2K only).
register("nvimgcodec", "mammoprep.decoders.nvimgcodec", 5)


@lru_cache(maxsize=None)
def _load(name: str) -> ModuleType:
    return importlib.import_module(PLUGINS[name].module)


@lru_cache(maxsize=None)
def is_available(name: str) -> bool:
    """True if plug-in ``name`` can run here (its packages import)."""
    try:
        return bool(_load(name).is_available())
    except ImportError:
        return False


def names() -> list[str]:
    """All registered plug-in names, in priority order."""
    return [p.name for p in sorted(PLUGINS.values(), key=lambda p: (p.priority, p.name))]


def handles(name: str, transfer_syntax: str) -> bool:
    return transfer_syntax in _load(name).TRANSFER_SYNTAXES


def candidates(transfer_syntax: str, prefer: str | None = None) -> list[str]:
    """Available plug-ins for ``transfer_syntax``, ``prefer`` first, then by priority."""
    order = names()
    if prefer:
        if prefer not in PLUGINS:
            raise ValueError(f"unknown decoder {prefer!r}; known: {', '.join(order)}")
        order = [prefer] + [n for n in order if n != prefer]
    return [n for n in order if is_available(n) and handles(n, transfer_syntax)]


def requirements() -> dict[str, str]:
    """Plug-in name -> what to install for it."""
    return {n: _load(n).REQUIRES for n in names()}


def decode(ds, transfer_syntax: str, path: str | None = None,
           prefer: str | None = None) -> tuple[np.ndarray, str]:
    """Decode the single frame of ``ds``. Returns (stored values [rows, cols], plug-in name).

    Raises NoDecoderError when no installed plug-in handles the transfer syntax (or every
    one reported a capability gap), and DecodeError as soon as one plug-in fails on the data
    or warns (see :func:`run_plugin`); later plug-ins are then not asked.
    """
    cands = candidates(transfer_syntax, prefer)
    tag = "(0002,0010) TransferSyntaxUID"
    missing: list[str] = []
    for name in cands:
        try:
            return run_plugin(name, ds, transfer_syntax, path), name
        except (CodecMissing, Unsupported) as exc:
            missing.append(f"{name}: {exc}")
    needs = "; ".join(f"{n}: {r}" for n, r in requirements().items())
    raise NoDecoderError(path, "no installed decoder handles this transfer syntax"
                         + (f" ({'; '.join(missing)})" if missing else ""),
                         tag=tag, value=f"{transfer_syntax} ({_ts_name(transfer_syntax)})",
                         hint=f"Decoder plug-ins and what they need: {needs}. Or "
                              "re-export the image uncompressed")


def run_plugin(name: str, ds, transfer_syntax: str, path: str | None = None,
               **kwargs) -> np.ndarray:
    """``decode`` of plug-in ``name``, with its warnings captured.

    Raises CodecMissing / Unsupported as the plug-in does (the caller tries the next one);
    any other exception, or a warning not in :data:`ALLOWED_WARNINGS`, becomes a
    :class:`~mammoprep.errors.DecodeError` naming the plug-in: the file is rejected."""
    try:
        with codec_messages() as caught:
            arr = _load(name).decode(ds, transfer_syntax, **kwargs)
    except (CodecMissing, Unsupported):
        raise
    except Exception as exc:  # noqa: BLE001 - a codec failure is this file's reject
        raise corrupt(path, transfer_syntax, name,
                      f"{type(exc).__name__}: {exc}") from None
    bad = [m for m in dict.fromkeys(caught) if not allowed_warning(m)]
    if bad:
        raise corrupt(path, transfer_syntax, name, f"warned: {bad[0]}"
                      + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    return arr


def corrupt(path: str | None, transfer_syntax: str, name: str, message: str) -> DecodeError:
    """The one-line reject for a codestream a decoder refused or warned about."""
    text = " ".join(str(message).split())  # one line, whatever the codec printed
    return DecodeError(path, f"{name} could not decode the pixel data ({text})",
                       tag="(7FE0,0010) PixelData",
                       value=f"{transfer_syntax} ({_ts_name(transfer_syntax)}), decoder {name}",
                       hint="the codestream is corrupt; re-export or re-download the image")


def allowed_warning(message: str) -> bool:
    """True if ``message`` matches one of :data:`ALLOWED_WARNINGS`."""
    return any(re.search(pattern, message) for pattern, _ in ALLOWED_WARNINGS)


@contextmanager
def codec_messages():
    """Collect, as text, the warnings (``warnings.warn``) and WARNING+ ``logging`` records of
    :data:`CODEC_LOGGERS` raised by the current thread inside the block. Other threads'
    warnings, and warnings about API use rather than data (:data:`API_WARNINGS`: a library
    deprecating a call says nothing about the file), pass through to the previous handler
    untouched."""
    caught: list[str] = []
    me = threading.get_ident()

    class _Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == me:
                caught.append(record.getMessage())

    handler = _Handler(logging.WARNING)
    loggers = [logging.getLogger(n) for n in CODEC_LOGGERS]
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        previous = warnings.showwarning

        for category in API_WARNINGS:
            warnings.filterwarnings("default", category=category)

        def show(message, category, filename, lineno, file=None, line=None):
            if threading.get_ident() == me and not issubclass(category, API_WARNINGS):
                caught.append(str(message))
            else:
                previous(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        for lg in loggers:
            lg.addHandler(handler)
        try:
            yield caught
        finally:
            for lg in loggers:
                lg.removeHandler(handler)


@dataclass(frozen=True)
class Decoded:
    """What :func:`decode_at_least` returns.

    pixels: stored values ``[ceil(rows / 2**reduction), ceil(cols / 2**reduction)]``.
    decoder: the plug-in name. reduction: resolution levels dropped (0 = full image).
    """

    pixels: np.ndarray
    decoder: str
    reduction: int


def reduced_size(rows: int, cols: int, reduction: int) -> tuple[int, int]:
    """``[rows, cols]`` after dropping ``reduction`` resolution levels (ceil per axis)."""
    f = 1 << reduction
    return -(-rows // f), -(-cols // f)


def reduction_for(rows: int, cols: int, min_size: tuple[int, int],
                  allowed: tuple[int, ...]) -> int:
    """The largest level in ``allowed`` whose reduced size is at least ``min_size`` (rows,
    cols) on both axes; 0 when none is (never below the request)."""
    ok = [r for r in allowed if r >= 0 and all(
        a >= b for a, b in zip(reduced_size(rows, cols, r), min_size))]
    return max(ok, default=0)


def recentre(pixels: np.ndarray, reduction: int) -> np.ndarray:
    """A reduced-resolution decode resampled onto the area grid of the original image.

    The LL band of the JPEG 2000 wavelets puts reduced sample ``i`` at the centre of
    original pixel ``i * 2**r``; the area convention used everywhere else (crops,
    :class:`~mammoprep.geometry.Transform`) puts reduced pixel ``i`` over original pixels
    ``[i * 2**r, (i + 1) * 2**r)``, centred ``2**(r-1) - 0.5`` original pixels further on.
    Returns ``uint16``: ``out[i, j] = p[i + d, j + d]``, ``d = 0.5 - 2**-(r+1)`` reduced
    pixels (bilinear, last row/column repeated, rounded half up:
    :func:`mammoprep.kernels.shift_bilinear`); the input itself when ``reduction`` is 0.
    Without it the stored images of the reduced path sit ``d`` pixels off the full path's
    (measured: about half their difference at level 1).
    """
    if not reduction:
        return pixels
    from .. import kernels

    return kernels.shift_bilinear(np.ascontiguousarray(pixels, dtype=np.uint16),
                                  0.5 - 0.5 ** (reduction + 1))


def decode_at_least(ds, transfer_syntax: str, min_size: tuple[int, int],
                    path: str | None = None, prefer: str | None = None) -> Decoded:
    """Decode the frame of ``ds`` at the smallest resolution that is still at least
    ``min_size`` = (rows, cols), when a plug-in can; else (or when the reducing plug-in
    raises :class:`Unsupported` / :class:`CodecMissing`) exactly as :func:`decode`. A data
    error or warning of the reduced decode is a reject, as in :func:`decode`.

    The first available plug-in for the transfer syntax (``prefer`` first) that offers
    ``reductions`` decides; a preferred plug-in without them, or one ahead of it that sets
    ``FULL_BEATS_REDUCED`` (a GPU decoder: its full decode is faster than a CPU reduced
    one), means a full decode with it.
    """
    rows, cols = int(ds.Rows), int(ds.Columns)
    for name in candidates(transfer_syntax, prefer):
        module = _load(name)
        if not hasattr(module, "reductions"):
            if name == prefer or getattr(module, "FULL_BEATS_REDUCED", False):
                break
            continue
        try:
            r = reduction_for(rows, cols, min_size, module.reductions(ds, transfer_syntax))
        except (CodecMissing, Unsupported):
            break
        except Exception as exc:  # noqa: BLE001 - its header cannot be read: a reject
            raise corrupt(path, transfer_syntax, name,
                          f"{type(exc).__name__}: {exc}") from None
        if r:
            try:
                return Decoded(run_plugin(name, ds, transfer_syntax, path, reduction=r),
                               name, r)
            except (CodecMissing, Unsupported):
                pass  # full decode below
        break
    pixels, name = decode(ds, transfer_syntax, path=path, prefer=prefer)
    return Decoded(pixels, name, 0)


def _ts_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name


def single_frame_bytes(ds) -> bytes:
    """The encapsulated codestream of the only frame of ``ds`` (all fragments joined)."""
    from pydicom.encaps import generate_frames

    return next(generate_frames(ds.PixelData, number_of_frames=1))
