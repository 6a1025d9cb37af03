"""Foreground CDF matching to a low-energy reference (LUMINA Section 4, Eq. 7).

For a source image ``I_s`` with foreground ``M = {pixel > 0}`` (after MONOCHROME1->2 and
burned-in text removal, :mod:`mammoprep.segmentation.foreground`):

* ``H_s``: histogram of the foreground, one bin per integer level (bin 0 excluded);
  ``H_r``: the reference's pooled foreground histogram over ``0..2^b - 1``;
* ``C_s(p) = sum_{k<=p} H_s[k] / sum H_s`` and ``C_r(q)`` likewise;
* ``T(p) = argmin_{q in 1..2^b-1} |C_s(p) - C_r(q)|`` (smallest q on ties; monotone);
* ``I_o = T(I_s)`` on the foreground, exactly 0 elsewhere.

**No dynamic range is lost to binning**: the source histogram has one bin per integer level
(65536 bins unless the caller states a smaller bit depth), so an archive that declares 16
bits but uses only ~1,700 levels keeps every level; matching an image to its own histogram
gives back every level it had. ``T`` is computed in O(bins) by a monotone two-pointer sweep
(:func:`mammoprep.kernels.match_sweep`) and applied as a lookup table. The Numba kernels are
imported on first use: loading a :class:`Reference` costs no Numba start-up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ..atomic import atomic_write  # temporary, fsync, rename; WriteError if full
from ..errors import MammoprepError, ReferenceError_
from ..inputs import MAX_TABLE_BYTES, open_input
from ..geometry import bbox_xyxy
from ..histogram import PixelRangeError, as_u16, check_bits, foreground_histogram
from ..record import Record

#: Bit depth of the LUMINA low-energy reference.
DEFAULT_BITS = 12
_FORMAT = 1
_KEYS = ("format", "hist", "bits", "image_hashes", "count")
#: Optional per-image keys (added later; older files without them still load).
_IMAGE_KEYS = ("image_bits", "image_vendors", "image_evidence")


def _cdf(hist: np.ndarray) -> np.ndarray:
    """float64 normalised cumulative histogram (the one formula used for source and
    reference, so equal counts give bit-identical CDFs)."""
    c = np.cumsum(hist, dtype=np.int64)
    return c / np.float64(c[-1])


def match_lut(src_hist: np.ndarray, ref_cdf: np.ndarray) -> np.ndarray:
    """``uint16 [len(src_hist)]`` lookup table ``T`` of Eq. 7 with ``T[0] = 0`` and
    ``T[p] in 1..len(ref_cdf)-1``.

    Args:
        src_hist: foreground histogram of the source, ``int [levels]`` (bin 0 is ignored).
        ref_cdf: normalised reference CDF, ``float64 [2^b]`` (:attr:`Reference.cdf`).
    """
    src = np.array(src_hist, dtype=np.int64)
    if src.ndim != 1 or len(src) < 2:
        raise ValueError("src_hist must be 1-D with at least 2 bins")
    src[0] = 0
    if src.sum() == 0:
        raise MammoprepError(None, "cannot harmonise an image without foreground pixels "
                             "(every pixel is 0)")
    ref_cdf = np.ascontiguousarray(ref_cdf, dtype=np.float64)
    if ref_cdf.ndim != 1 or len(ref_cdf) < 2 or len(ref_cdf) > 65536:
        raise ValueError("ref_cdf must be 1-D with 2..65536 bins")
    from .. import kernels

    return kernels.match_sweep(_cdf(src), ref_cdf)


def apply_lut(pixels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``uint16 [rows, cols]``: ``lut[pixels]``; background 0 stays 0 (``lut[0]`` must be
    0). A pixel value without a LUT entry raises :class:`PixelRangeError`."""
    pixels = as_u16(pixels)
    lut = np.asarray(lut)
    if lut.ndim != 1 or len(lut) == 0 or len(lut) > 65536:
        raise ValueError("lut must be 1-D with 1..65536 entries")
    if lut[0] != 0:
        raise ValueError(f"lut[0] must be 0 (background stays 0), got {lut[0]}")
    if len(lut) < 65536:
        top = int(pixels.max()) if pixels.size else 0
        if top >= len(lut):
            raise PixelRangeError(None, f"pixel value {top} has no entry in a LUT of "
                                  f"{len(lut)} levels")
    from .. import kernels

    return kernels.apply_lut(pixels, _full_lut(lut))


def _full_lut(lut: np.ndarray) -> np.ndarray:
    full = np.zeros(65536, np.uint16)
    full[: len(lut)] = lut
    return full


@dataclass(frozen=True, eq=False)
class Reference:
    """A harmonisation reference: the pooled foreground histogram of low-energy images.

    Attributes:
        hist: ``int64 [2^bits]``, pooled foreground counts, ``hist[0] == 0`` (read-only).
            Pooled from images of several depths, each pixel counts ``2^u`` spread over
            the levels it covers (:func:`rescale_histogram`); only the CDF matters.
        bits: bit depth ``b`` of the reference; matched images take levels ``1..2^b-1``.
        image_hashes: one string per contributing image (e.g. sha256 of its pixels).
        count: number of contributing images (``== len(image_hashes)``).
        image_bits: bit depth of each contributing image before rescaling to ``bits``
            (empty when unknown, e.g. a reference saved by an older version).
        image_vendors: manufacturer of each contributing image ('' if absent; empty when
            unknown).
        image_evidence: why each contributing image counted as a mammogram, e.g.
            ``'modality MG'``, ``'dx + image laterality'``
            (:func:`mammoprep.io.mammogram.mammogram_evidence`; empty when unknown, e.g. a
            reference saved by an older version). :meth:`evidence_counts` sums them.
    """

    hist: np.ndarray
    bits: int = DEFAULT_BITS
    image_hashes: tuple[str, ...] = field(default_factory=tuple)
    count: int = 0
    image_bits: tuple[int, ...] = field(default_factory=tuple)
    image_vendors: tuple[str, ...] = field(default_factory=tuple)
    image_evidence: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        problem = _reference_problem(self.hist, self.bits, self.image_hashes, self.count) \
            or _per_image_problem(self.image_bits, self.image_vendors, self.count,
                                  self.image_evidence)
        if problem:
            raise ReferenceError_(None, problem)
        object.__setattr__(self, "image_bits", tuple(int(b) for b in self.image_bits))
        object.__setattr__(self, "image_vendors", tuple(str(v) for v in self.image_vendors))
        object.__setattr__(self, "image_evidence", tuple(str(v) for v in self.image_evidence))
        hist = np.array(self.hist, dtype=np.int64)
        hist.flags.writeable = False
        object.__setattr__(self, "hist", hist)
        object.__setattr__(self, "bits", int(self.bits))
        object.__setattr__(self, "image_hashes", tuple(str(h) for h in self.image_hashes))
        object.__setattr__(self, "count", int(self.count))

    @classmethod
    def from_histograms(cls, histograms: Iterable[np.ndarray], bits: int = DEFAULT_BITS,
                        image_hashes: Sequence[str] | None = None,
                        image_bits: Sequence[int] = (),
                        image_vendors: Sequence[str] = (),
                        image_evidence: Sequence[str] = ()) -> "Reference":
        """Pool per-image foreground histograms (each ``int [levels]``, bin 0 ignored).

        Histograms must already be at depth ``bits`` (see :func:`rescale_histogram` for
        images of other depths). A histogram longer than ``2^bits`` is accepted only if it
        has no counts above ``2^bits - 1``. ``image_hashes`` defaults to one placeholder per
        histogram (``"hist-<i>"``); ``image_bits`` / ``image_vendors`` / ``image_evidence``:
        one entry per histogram, or empty."""
        bits = check_bits(bits)
        n = 1 << bits
        pooled = np.zeros(n, np.int64)
        k = 0
        for k, h in enumerate(histograms, start=1):
            h = np.asarray(h)
            if h.ndim != 1 or not np.issubdtype(h.dtype, np.integer):
                raise ReferenceError_(None, f"histogram {k} must be a 1-D integer array")
            if (h < 0).any():
                raise ReferenceError_(None, f"histogram {k} has negative counts")
            if len(h) > n and h[n:].any():
                top = n + int(np.flatnonzero(h[n:])[-1])
                raise ReferenceError_(None, f"histogram {k} has level {top} above "
                                      f"2^{bits} - 1", hint="build the reference with "
                                      "images of that bit depth or raise bits")
            m = min(len(h), n)
            pooled[:m] += h[:m].astype(np.int64)
        pooled[0] = 0
        hashes = tuple(image_hashes) if image_hashes is not None else \
            tuple(f"hist-{i}" for i in range(k))
        if len(hashes) != k:
            raise ReferenceError_(None, f"{len(hashes)} image hashes for {k} histograms")
        return cls(pooled, bits, hashes, k, tuple(image_bits), tuple(image_vendors),
                   tuple(image_evidence))

    @classmethod
    def from_images(cls, images: Iterable[np.ndarray], bits: int = DEFAULT_BITS,
                    image_hashes: Sequence[str] | None = None) -> "Reference":
        """Pool the foreground histograms of ``uint16 [rows, cols]`` images (text already
        removed). ``image_hashes`` defaults to sha256 of each image's bytes (16 hex)."""
        bits = check_bits(bits)
        hists, hashes = [], []
        for px in images:
            px = as_u16(px)
            hists.append(foreground_histogram(px, bits))
            hashes.append(hashlib.sha256(np.ascontiguousarray(px).tobytes()).hexdigest()[:16])
        return cls.from_histograms(hists, bits,
                                   hashes if image_hashes is None else image_hashes)

    @cached_property
    def cdf(self) -> np.ndarray:
        """``float64 [2^bits]``: normalised cumulative foreground histogram, ``cdf[0] = 0``,
        ``cdf[-1] = 1``."""
        c = _cdf(self.hist)
        c.flags.writeable = False
        return c

    def evidence_counts(self) -> dict[str, int]:
        """Contributing images per mammogram evidence (:attr:`image_evidence`), sorted;
        empty when not recorded."""
        counts: dict[str, int] = {}
        for e in self.image_evidence:
            counts[e] = counts.get(e, 0) + 1
        return dict(sorted(counts.items()))

    @property
    def digest(self) -> str:
        """sha256 (16 hex) of the bit depth and the histogram: identifies the reference."""
        h = hashlib.sha256(f"bits={self.bits};".encode())
        h.update(self.hist.astype("<i8").tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npz; keys format, hist, bits, image_hashes, count, and per
        contributing image image_bits (int64), image_vendors and image_evidence (str))."""
        path = Path(path)

        def strings(items):
            return np.array(items, dtype=np.str_) if items else np.zeros(0, dtype="<U1")

        atomic_write(path, lambda fh: np.savez(
            fh, format=np.int64(_FORMAT), hist=self.hist.astype("<i8"),
            bits=np.int64(self.bits), image_hashes=strings(self.image_hashes),
            count=np.int64(self.count), image_bits=np.array(self.image_bits, dtype="<i8"),
            image_vendors=strings(self.image_vendors),
            image_evidence=strings(self.image_evidence)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Reference":
        """Read a reference written by :meth:`save`; raises :class:`ReferenceError_`
        naming the file and what is wrong."""
        path = Path(path)
        try:
            with open_input(path, "reference", MAX_TABLE_BYTES) as fh, \
                    np.load(fh, allow_pickle=False) as z:
                missing = [k for k in _KEYS if k not in z.files]
                if missing:
                    raise ReferenceError_(path, f"not a mammoprep reference: missing key(s) "
                                          f"{', '.join(missing)} (found {sorted(z.files)})")
                arrays = {k: z[k] for k in _KEYS}
                extra = {k: z[k] for k in _IMAGE_KEYS if k in z.files}  # absent: older file
        except ReferenceError_:
            raise
        except MammoprepError as err:  # missing, a FIFO or device, too large
            if not path.exists() and not path.is_symlink():
                raise ReferenceError_(path, "reference file not found") from None
            raise ReferenceError_(path, f"cannot read reference ({err.problem})",
                                  hint=err.hint) from None
        except FileNotFoundError:
            raise ReferenceError_(path, "reference file not found") from None
        except (OSError, ValueError, EOFError) as err:
            raise ReferenceError_(path, f"cannot read reference (.npz expected): {err}"
                                  ) from None
        if arrays["format"].shape != () or int(arrays["format"]) != _FORMAT:
            raise ReferenceError_(path, f"unsupported reference format {arrays['format']!r}"
                                  f" (this version reads format {_FORMAT})")
        for key in ("bits", "count"):
            a = arrays[key]
            if a.shape != () or not np.issubdtype(a.dtype, np.integer):
                raise ReferenceError_(path, f"'{key}' must be an integer scalar, got "
                                      f"{a.dtype} {a.shape}")
        hist, hashes = arrays["hist"], arrays["image_hashes"]
        if not np.issubdtype(hist.dtype, np.integer):
            raise ReferenceError_(path, f"'hist' must hold integers, got {hist.dtype}")
        if hashes.ndim != 1 or (hashes.size and hashes.dtype.kind != "U"):
            raise ReferenceError_(path, "'image_hashes' must be a 1-D array of strings")
        bits, count = int(arrays["bits"]), int(arrays["count"])
        image_bits = extra.get("image_bits", np.zeros(0, np.int64))
        vendors = extra.get("image_vendors", np.zeros(0, "<U1"))
        evidence = extra.get("image_evidence", np.zeros(0, "<U1"))
        if image_bits.ndim != 1 or (image_bits.size
                                    and not np.issubdtype(image_bits.dtype, np.integer)):
            raise ReferenceError_(path, "'image_bits' must be a 1-D array of integers")
        for key, a in (("image_vendors", vendors), ("image_evidence", evidence)):
            if a.ndim != 1 or (a.size and a.dtype.kind != "U"):
                raise ReferenceError_(path, f"'{key}' must be a 1-D array of strings")
        problem = _reference_problem(hist, bits, tuple(hashes.tolist()), count) \
            or _per_image_problem(image_bits.tolist(), vendors.tolist(), count,
                                  evidence.tolist())
        if problem:
            raise ReferenceError_(path, problem)
        return cls(hist, bits, tuple(hashes.tolist()), count, tuple(image_bits.tolist()),
                   tuple(vendors.tolist()), tuple(evidence.tolist()))


def _reference_problem(hist, bits, hashes, count) -> str | None:
    """What is wrong with these reference fields, or None."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) \
            or not 1 <= int(bits) <= 16:
        return f"bits must be an integer in 1..16, got {bits!r}"
    hist = np.asarray(hist)
    if hist.ndim != 1 or hist.shape[0] != 1 << int(bits):
        return (f"histogram shape {hist.shape} does not match bits={bits} "
                f"(expected ({1 << int(bits)},))")
    if hist.size and not np.issubdtype(hist.dtype, np.integer):
        return f"histogram must hold integers, got {hist.dtype}"
    if (hist < 0).any():
        return "histogram has negative counts"
    if hist[0] != 0:
        return f"histogram bin 0 (background) must be 0, got {int(hist[0])}"
    if hist.sum() == 0:
        return "histogram is empty (no foreground pixels)"
    if int(count) != len(hashes):
        return f"count {count} does not match the {len(hashes)} image hashes"
    return None


def _per_image_problem(image_bits, image_vendors, count, image_evidence=()) -> str | None:
    """What is wrong with the optional per-image fields, or None (empty = unknown)."""
    for name, items in (("image_bits", image_bits), ("image_vendors", image_vendors),
                        ("image_evidence", image_evidence)):
        if len(items) and len(items) != int(count):
            return f"{name} has {len(items)} entries for {count} images"
    if any(not 1 <= int(b) <= 16 for b in image_bits):
        return f"image_bits must be in 1..16, got {sorted(set(int(b) for b in image_bits))}"
    return None


def rescale_histogram(hist: np.ndarray, from_bits: int, to_bits: int,
                      unit_bits: int = 0) -> np.ndarray:
    """``int64 [2^to_bits]``: a foreground histogram of a ``from_bits`` image on the level
    scale of ``to_bits``, every pixel weighing ``2^unit_bits``.

    Level ``p`` of the source covers ``[p, p + 1) * 2^(to_bits - from_bits)`` on the target
    scale. Going down, ``2^(from_bits - to_bits)`` source levels merge into one bin; going
    up, each source level's weight is spread evenly over the ``2^(to_bits - from_bits)``
    target levels it covers (no comb of empty levels, so matching to the pooled reference
    keeps every output level). Spreading needs ``unit_bits >= to_bits - from_bits`` so that
    counts stay integers; pool images of several depths with one common ``unit_bits``.
    Bin 0 of the result is 0 (background).

    Args:
        hist: ``int [2^from_bits]`` (longer is accepted if the extra bins are empty).
    """
    from_bits, to_bits = check_bits(from_bits, "from_bits"), check_bits(to_bits, "to_bits")
    n_from = 1 << from_bits
    h = np.asarray(hist)
    if h.ndim != 1 or not np.issubdtype(h.dtype, np.integer):
        raise ValueError("hist must be a 1-D integer array")
    if len(h) > n_from and h[n_from:].any():
        raise PixelRangeError(None, f"histogram has counts above level {n_from - 1} = "
                              f"2^{from_bits} - 1", hint="state the true bit depth")
    src = np.zeros(n_from, np.int64)
    m = min(len(h), n_from)
    src[:m] = h[:m]
    src[0] = 0
    if to_bits <= from_bits:
        out = src.reshape(1 << to_bits, -1).sum(axis=1) << unit_bits
        if len(out) > 1:  # foreground levels that fall into bin 0 stay foreground: level 1
            out[1] += out[0]
    else:
        up = to_bits - from_bits
        if unit_bits < up:
            raise ValueError(f"unit_bits must be >= to_bits - from_bits = {up} to spread "
                             f"counts evenly, got {unit_bits}")
        out = np.repeat(src << (unit_bits - up), 1 << up)
    out[0] = 0  # background; also the sub-levels of source level 0 (empty anyway)
    return out


def harmonize_pixels(pixels: np.ndarray, reference: Reference,
                     bits: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Match the foreground of ``pixels`` (uint16 [rows, cols]) to ``reference`` (Eq. 7).

    Args:
        bits: bit depth of the source; values above ``2^bits - 1`` raise
            :class:`PixelRangeError`. ``None`` (default): one bin for every uint16 level.
        out: uint16 array of the same shape (e.g. a view into a larger image) to write into.
    Returns:
        ``uint16 [rows, cols]``: background exactly 0, foreground in
        ``1..2^reference.bits - 1``.
    """
    return _harmonized(pixels, reference, bits, out)[0]


def _harmonized(pixels: np.ndarray, reference: Reference, bits: int | None = None,
                out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`harmonize_pixels` and the foreground histogram of its result, ``int64
    [2^reference.bits]`` (the source's histogram carried through the LUT: no pass over the
    output)."""
    pixels = as_u16(pixels)
    hist = foreground_histogram(pixels, 16 if bits is None else bits)
    top = int(np.flatnonzero(hist)[-1]) if hist.any() else 1
    lut = match_lut(hist[: max(top, 1) + 1], reference.cdf)  # levels above the max: unused
    from .. import kernels

    return (kernels.apply_lut(pixels, _full_lut(lut), out),
            carried_histogram(hist[: len(lut)], lut, 1 << reference.bits))


def carried_histogram(hist: np.ndarray, lut: np.ndarray, nbins: int) -> np.ndarray:
    """``int64 [nbins]``: the foreground histogram of ``lut[pixels]`` from that of
    ``pixels`` (``hist``, ``int [len(lut)]``, bin 0 ignored; ``lut[1:]`` in ``1..nbins-1``):
    every source level's count moves to its matched level."""
    hist = np.asarray(hist, np.int64)
    levels = np.flatnonzero(hist[1:]) + 1
    out = np.zeros(nbins, np.int64)
    np.add.at(out, np.asarray(lut)[levels].astype(np.intp), hist[levels])
    out[0] = 0
    return out


def harmonize(record: Record, reference: Reference, in_place: bool = False) -> Record:
    """Record step: :func:`harmonize_pixels`; meta gains ``harmonized = True``,
    ``reference_bits`` and ``bits_stored = reference.bits``.

    After text removal (``'remove_text'`` in ``meta['steps']``) every pixel outside
    ``meta['breast_bbox']`` is exactly 0, so only the box is matched (same histogram, same
    LUT, same output; about half the work on a typical mammogram). ``in_place``: the
    caller owns ``record.pixels`` and no longer needs them (a pipeline's text-free copy):
    the box is matched where it lies, with no new image and nothing to zero around it."""
    try:
        pixels = record.pixels
        bbox = record.meta.get("breast_bbox")
        if bbox and "remove_text" in record.meta.get("steps", ()):
            x0, y0, x1, y1 = bbox_xyxy(bbox)
            if in_place and pixels.dtype == np.uint16 and pixels.flags.writeable:
                out = pixels  # the LUT reads each pixel before it writes it
            else:
                out = np.empty(pixels.shape, np.uint16)  # the view below is validated
                out[:y0], out[y1:], out[y0:y1, :x0], out[y0:y1, x1:] = 0, 0, 0, 0  # outside
            hist = _harmonized(pixels[y0:y1, x0:x1], reference, out=out[y0:y1, x0:x1])[1]
            pixels = out
        else:
            pixels, hist = _harmonized(pixels, reference)
    except MammoprepError as err:
        raise type(err)(record.path, err.problem, tag=err.tag, value=err.value,
                        hint=err.hint) from None
    return record.evolve(pixels, step="harmonize", histogram=hist, harmonized=True,
                         reference_bits=reference.bits, bits_stored=reference.bits)
