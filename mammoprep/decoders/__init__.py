"""Pixel-data decoders behind a small registry.

Each plug-in is a module in this package with

* ``TRANSFER_SYNTAXES``: the transfer syntax UIDs it decodes;
* ``REQUIRES``: what to ``pip install`` for it;
* ``is_available() -> bool``;
* ``decode(ds, transfer_syntax) -> np.ndarray``: the stored values of the single frame,
  ``[rows, cols]``, unsigned integer dtype, before any LUT or inversion.

Plug-ins are registered by name and imported lazily. :func:`decode` tries the available
plug-ins for a transfer syntax in priority order (fastest first); every plug-in of a
transfer syntax must give identical pixels (tests check it on real files). When none can
decode, :class:`~mammoprep.errors.NoDecoderError` lists every plug-in and what it needs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

import numpy as np

from ..errors import DecodeError, NoDecoderError


@dataclass(frozen=True)
class Plugin:
    """A registered decoder: ``name``, the module holding it, and its priority (low first)."""

    name: str
    module: str
    priority: int


_REGISTRY: dict[str, Plugin] = {}


def register(name: str, module: str, priority: int) -> None:
    """Register a decoder module (imported lazily) under ``name``."""
    _REGISTRY[name] = Plugin(name, module, priority)


# Faster codecs first; the pydicom/pylibjpeg plug-in handles every transfer syntax last.
register("libjpeg-turbo", "mammoprep.decoders.turbo", 10)
register("charls", "mammoprep.decoders.charls", 10)
register("openjph", "mammoprep.decoders.openjph", 10)
register("pydicom", "mammoprep.decoders.pydicom_plugin", 100)


@lru_cache(maxsize=None)
def _load(name: str) -> ModuleType:
    return importlib.import_module(_REGISTRY[name].module)


@lru_cache(maxsize=None)
def is_available(name: str) -> bool:
    """True if plug-in ``name`` can run here (its packages import)."""
    try:
        return bool(_load(name).is_available())
    except ImportError:
        return False


def names() -> list[str]:
    """All registered plug-in names, in priority order."""
    return [p.name for p in sorted(_REGISTRY.values(), key=lambda p: (p.priority, p.name))]


def handles(name: str, transfer_syntax: str) -> bool:
    return transfer_syntax in _load(name).TRANSFER_SYNTAXES


def candidates(transfer_syntax: str, prefer: str | None = None) -> list[str]:
    """Available plug-ins for ``transfer_syntax``, ``prefer`` first, then by priority."""
    order = names()
    if prefer:
        if prefer not in _REGISTRY:
            raise ValueError(f"unknown decoder {prefer!r}; known: {', '.join(order)}")
        order = [prefer] + [n for n in order if n != prefer]
    return [n for n in order if is_available(n) and handles(n, transfer_syntax)]


def requirements() -> dict[str, str]:
    """Plug-in name -> what to install for it."""
    return {n: _load(n).REQUIRES for n in names()}


def decode(ds, transfer_syntax: str, path: str | None = None,
           prefer: str | None = None) -> tuple[np.ndarray, str]:
    """Decode the single frame of ``ds``. Returns (stored values [rows, cols], plug-in name).

    Raises NoDecoderError when no installed plug-in handles the transfer syntax, and
    DecodeError when every candidate failed (the last failure is quoted).
    """
    cands = candidates(transfer_syntax, prefer)
    tag = "(0002,0010) TransferSyntaxUID"
    if not cands:
        needs = "; ".join(f"{n}: {r}" for n, r in requirements().items())
        raise NoDecoderError(path, "no installed decoder handles this transfer syntax",
                             tag=tag, value=f"{transfer_syntax} ({_ts_name(transfer_syntax)})",
                             hint=f"Decoder plug-ins and what they need: {needs}. Or "
                                  "re-export the image uncompressed")
    last: Exception | None = None
    for name in cands:
        try:
            return _load(name).decode(ds, transfer_syntax), name
        except Exception as exc:  # noqa: BLE001 - a codec failure must not end the batch
            last = exc
    raise DecodeError(path, f"pixel data could not be decoded ({type(last).__name__}: {last})",
                      tag=tag, value=f"{transfer_syntax} ({_ts_name(transfer_syntax)})",
                      hint=f"tried {', '.join(cands)}; the file may be corrupt, or try "
                           "another decoder with --decoder")


def _ts_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name


def single_frame_bytes(ds) -> bytes:
    """The encapsulated codestream of the only frame of ``ds`` (all fragments joined)."""
    from pydicom.encaps import generate_frames

    return next(generate_frames(ds.PixelData, number_of_frames=1))
