"""Typed errors. Every message names the file, the DICOM tag and its value, and what to do.

The CLI catches :class:`MammoprepError` and prints ``str(err)``; a traceback is a bug.
"""

from __future__ import annotations

from pathlib import Path


def display_path(path: object) -> str:
    """A file name safe to print on one line: control characters (a newline cannot forge an
    extra line) and undecodable bytes (``\\xNN``, from non-UTF-8 names) escaped."""
    text = str(path)
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)


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
        parts = [f"{display_path(self.path)}: " if self.path else "", self.problem]
        if self.tag is not None:
            parts.append(f" [{self.tag} = {self.value!r}]")
        if self.hint:
            parts.append(f". {self.hint}")
        return "".join(parts)

    def __reduce__(self):
        """Picklable with its fields (an error raised in a worker process reaches the
        parent as the same typed error, not as a failure to unpickle it)."""
        return (_rebuild, (type(self), self.path, self.problem, self.tag, self.value,
                           self.hint))

    def as_dict(self) -> dict:
        """JSON-friendly form, used by ``inspect --json`` and the rejects manifest."""
        return {"error": self.kind, "message": str(self), "tag": self.tag,
                "value": None if self.value is None else str(self.value)}


def _rebuild(cls, path, problem, tag, value, hint) -> MammoprepError:
    err = cls.__new__(cls)
    MammoprepError.__init__(err, path, problem, tag=tag, value=value, hint=hint)
    return err


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


class NotMammogramError(MammoprepError):
    """Not a mammogram by its header (Modality and SOP Class UID), e.g. a CR chest."""

    kind = "not_mammogram"


class UnexpectedError(MammoprepError):
    """An unexpected exception while processing one file, wrapped so that the batch goes
    on and the file is named (a bug or an input no rule covers yet)."""

    kind = "unexpected_error"

    @classmethod
    def wrap(cls, path, exc: BaseException, during: str) -> "UnexpectedError":
        return cls(path, f"unexpected failure during {during} ({type(exc).__name__}: {exc})",
                   hint="the rest of the batch goes on; please report this file's header "
                        "(without patient data)")


class NotRegularFileError(MammoprepError):
    """A FIFO, device, socket, directory or symlink loop where a DICOM file was expected
    (never opened, so it cannot hang or flood memory)."""

    kind = "not_a_regular_file"


class UnreadableError(MammoprepError):
    """A file the operating system will not let us read (permissions, I/O error)."""

    kind = "unreadable"


class TooLargeError(MammoprepError):
    """Decompressed data larger than the header implies (a decompression bomb)."""

    kind = "too_large"


class PixelLengthError(MammoprepError):
    """Native pixel data longer than Rows x Columns x Bits Allocated / 8 plus the one pad
    byte PS3.5 allows: the header does not describe the data (wrong size or depth)."""

    kind = "pixel_length_mismatch"


class ImplausibleImageError(MammoprepError):
    """Decoded pixels that cannot be a mammogram: values beyond 16 bits after the Modality
    Rescale, or a truncated / corrupt compressed codestream."""

    kind = "implausible_pixels"


class NoContrastError(ImplausibleImageError):
    """Every pixel has the same value (a blank exposure or zeroed pixel data)."""

    kind = "no_contrast"


class WriteError(MammoprepError):
    """An output that could not be written (disk full, permissions); nothing partial is
    left under the output's name, so a rerun starts clean."""

    kind = "write_failed"


class ReferenceError_(MammoprepError):
    """A harmonisation reference that cannot be used (empty, wrong bit depth, bad file)."""

    kind = "bad_reference"


def tag_name(group: int, elem: int, keyword: str) -> str:
    """``(0028,0004) PhotometricInterpretation`` style tag text for messages."""
    return f"({group:04X},{elem:04X}) {keyword}"
