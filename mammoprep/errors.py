"""Typed errors. Every message names the file, the DICOM tag and its value, and what to do.

The CLI catches :class:`MammoprepError` and prints ``str(err)``; a traceback is a bug.
"""

from __future__ import annotations

from pathlib import Path


class MammoprepError(Exception):
    """Base class: an input we cannot turn into a correct image.

    Attributes:
        path: the offending file (or None).
        tag: the DICOM tag text, e.g. ``"(0028,0004) Photometric Interpretation"`` (or None).
        value: the value found in that tag (or None).
        hint: what the user can do about it.
    """

    kind = "error"

    def __init__(self, path: str | Path | None, problem: str, *, tag: str | None = None,
                 value: object = None, hint: str = ""):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.tag = tag
        self.value = value
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        parts = [f"{self.path}: " if self.path else "", self.problem]
        if self.tag is not None:
            parts.append(f" [{self.tag} = {self.value!r}]")
        if self.hint:
            parts.append(f". {self.hint}")
        return "".join(parts)

    def as_dict(self) -> dict:
        """JSON-friendly form, used by ``inspect --json`` and the rejects manifest."""
        return {"error": self.kind, "message": str(self), "tag": self.tag,
                "value": None if self.value is None else str(self.value)}


class NotDicomError(MammoprepError):
    kind = "not_dicom"


class TruncatedError(MammoprepError):
    kind = "truncated"


class NoPixelDataError(MammoprepError):
    kind = "no_pixel_data"


class UnsupportedImageError(MammoprepError):
    """Colour, multi-frame, signed or otherwise not a single grayscale mammogram."""

    kind = "unsupported_image"


class NoDecoderError(MammoprepError):
    kind = "no_decoder"


class DecodeError(MammoprepError):
    kind = "decode_failed"


class InvalidHeaderError(MammoprepError):
    kind = "invalid_header"


class ReferenceError_(MammoprepError):
    """A harmonisation reference that cannot be used (empty, wrong bit depth, bad file)."""

    kind = "bad_reference"


def tag_name(group: int, elem: int, keyword: str) -> str:
    """``(0028,0004) PhotometricInterpretation`` style tag text for messages."""
    return f"({group:04X},{elem:04X}) {keyword}"
