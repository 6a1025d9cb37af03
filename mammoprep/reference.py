"""Build or load the low-energy harmonisation reference (``--ref``).

A reference is the pooled foreground histogram of a set of low-energy mammograms, after
the same decoding and text removal as the images it will be applied to, each image's
histogram rescaled from its own bit depth to the reference depth, stored with its bit depth
and the hashed list, depth and vendor of contributing images
(:class:`mammoprep.harmonize.Reference`). Anything that is not a mammogram, or cannot be
read or segmented, is left out with a typed reason and counted; the rest still makes the
reference. ``--ref`` accepts a saved ``.npz``, a folder of DICOMs, or one DICOM file.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import MammoprepError, NotMammogramError, ReferenceError_, UnexpectedError

#: SOP Class UIDs of mammography images: (0008,0016) SOP Class UID, or (0002,0002) Media
#: Storage SOP Class UID in files whose data set lacks it.
MAMMOGRAPHY_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.13.1.3": "Breast Tomosynthesis Image Storage",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "Breast Projection X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "Breast Projection X-Ray Image Storage - For Processing",
}


def is_mammogram(meta: Mapping[str, Any]) -> bool:
    """True if the header says mammogram: (0008,0060) Modality ``MG``, or a SOP Class UID in
    :data:`MAMMOGRAPHY_SOP_CLASSES` (``meta['sop_class_uid']``)."""
    modality = str(meta.get("modality") or "").strip().upper()
    return modality == "MG" or str(meta.get("sop_class_uid") or "") in MAMMOGRAPHY_SOP_CLASSES


def check_mammogram(meta: Mapping[str, Any], path: str | Path | None = None) -> None:
    """Raise :class:`NotMammogramError` naming both tags unless :func:`is_mammogram`."""
    if not is_mammogram(meta):
        raise NotMammogramError(
            path, "not a mammogram, left out of the reference",
            tag="(0008,0060) Modality / (0008,0016) SOP Class UID",
            value=f"{meta.get('modality') or 'absent'} / {meta.get('sop_class_uid') or 'absent'}",
            hint="a reference pools mammograms only (Modality MG or a mammography SOP class)")


class DuplicateImageError(MammoprepError):
    """The same image (same SOP Instance UID) met a second time: pooled once only."""

    kind = "duplicate"


@dataclass(frozen=True)
class _Contribution:
    """One image pooled into a reference (identity-free)."""

    image_hash: str
    bits: int
    vendor: str


def _with_path(err: MammoprepError, path: Path) -> MammoprepError:
    """The same typed error, naming ``path`` if it did not already."""
    if err.path is not None:
        return err
    return type(err)(path, err.problem, tag=err.tag, value=err.value, hint=err.hint)


def _image_histogram(path: Path, energy: str | None, table, salt: bytes, decoder,
                     keep_suspect: bool, seen: dict[str, Path]):
    """(contribution, foreground histogram at the image's own depth), or None when the
    image is of another energy class. Raises typed errors (not a mammogram, unreadable,
    an image already pooled from the file ``seen[hash]``, segmentation suspect, ...)."""
    from .dicomio import read_dicom, read_header
    from .energy import energy_class
    from .foreground import remove_text
    from .harmonize import foreground_histogram

    header = read_header(path, salt=salt)  # cheap: decide before decoding
    check_mammogram(header, path)
    if energy and energy_class(header.get("manufacturer", ""), header.get("model", ""),
                               table) != energy:
        return None
    first = seen.get(header.get("sop_uid_hash") or "")
    if first is not None:
        raise DuplicateImageError(path, f"the same image was already pooled (from {first})",
                                  tag="(0008,0018) SOP Instance UID",
                                  value="same as an earlier file",
                                  hint="it counts once in the reference")
    rec = remove_text(read_dicom(path, salt=salt, decoder=decoder), keep_suspect=keep_suspect)
    bits = int(rec.meta.get("value_bits") or rec.meta["bits_stored"])  # not harmonised
    hist = foreground_histogram(rec.pixels, bits)
    return _Contribution(rec.meta["sop_uid_hash"], bits, rec.meta.get("manufacturer", "")), hist


def build_reference(inputs: Iterable[str | Path], *, energy: str | None = "low",
                    energy_table: str | None = None, bits: int | None = None,
                    salt: bytes | str | None = None, decoder: str | None = None,
                    keep_suspect: bool = False,
                    progress: Callable[[int], None] | None = None,
                    on_error: Callable[[MammoprepError], None] | None = None):
    """Pool the foreground histograms of the mammograms under ``inputs``.

    Only mammograms are pooled (:func:`is_mammogram`). Each image's histogram is taken at
    its own depth (Bits Stored, or the value depth after a Modality LUT) and rescaled to the
    reference depth with :func:`mammoprep.harmonize.rescale_histogram` before pooling, so
    10-, 12- and 14-bit images put the same tissue on the same levels.

    energy: keep only images of this energy class (metadata only), None for all.
    bits: reference bit depth; default the largest depth among contributing images.
    keep_suspect: pool images whose segmentation fails the quality gate instead of
        rejecting them (``segmentation_suspect``).
    on_error: called with the typed error of every file left out for a reason other than
        its energy class; no per-file failure stops the batch (unexpected exceptions are
        wrapped as :class:`~mammoprep.errors.UnexpectedError` naming the file).

    Returns (reference, report): report has ``used``, ``bits``, ``depths`` (images per
    source depth), ``other_energy``, ``failed`` (all other rejects) and ``rejects``
    (count per reason: ``other_energy``, ``not_mammogram``, ``segmentation_suspect``,
    ``duplicate`` (the same SOP Instance UID pooled once only), ...).
    Raises :class:`~mammoprep.errors.ReferenceError_` when no image can be used.
    """
    import numpy as np

    from .dicomio import iter_dicom_paths
    from .energy import load_energy_table
    from .harmonize import Reference, rescale_histogram

    from .identity import resolve_salt

    table = load_energy_table(energy_table)
    salt_b = salt if isinstance(salt, bytes) else resolve_salt(salt)  # once, not per file
    used: list[_Contribution] = []
    pooled: dict[int, np.ndarray] = {}  # source depth -> summed histogram at that depth
    rejects: dict[str, int] = {}
    seen: dict[str, Path] = {}  # image hash -> the file it was pooled from
    for path in iter_dicom_paths(inputs):
        path = Path(path)
        try:
            got = _image_histogram(path, energy, table, salt_b, decoder, keep_suspect, seen)
        except MammoprepError as err:
            got = _with_path(err, path)
        except Exception as exc:  # noqa: BLE001 - one bad file must not end the batch
            got = UnexpectedError.wrap(path, exc, "reference building")
        if got is None:
            rejects["other_energy"] = rejects.get("other_energy", 0) + 1
        elif isinstance(got, MammoprepError):
            rejects[got.kind] = rejects.get(got.kind, 0) + 1
            if on_error:
                on_error(got)
        else:
            item, hist = got
            if item.image_hash:
                seen[item.image_hash] = path
            used.append(item)
            if item.bits in pooled:
                pooled[item.bits] += hist
            else:
                pooled[item.bits] = hist.astype(np.int64, copy=True)
        if progress:
            progress(1)
    if not used:
        raise ReferenceError_(None, f"no {'%s-energy ' % energy if energy else ''}mammogram "
                              "could be used for the reference", tag="inputs",
                              value=[str(p) for p in inputs],
                              hint="pass low-energy mammograms (see manifests/energy_classes.csv)"
                                   " or --energy any; left out: "
                                   + (", ".join(f"{k} {v}" for k, v in sorted(rejects.items()))
                                      or "nothing"))
    b = bits or max(item.bits for item in used)
    unit = max(0, b - min(pooled))  # every pixel weighs 2^unit so that spreading is exact
    hist = sum(rescale_histogram(h, k, b, unit) for k, h in sorted(pooled.items()))
    used.sort(key=lambda item: item.image_hash)
    ref = Reference(hist, b, tuple(i.image_hash for i in used), len(used),
                    tuple(i.bits for i in used), tuple(i.vendor for i in used))
    depths: dict[int, int] = {}
    for item in used:
        depths[item.bits] = depths.get(item.bits, 0) + 1
    report = {"used": len(used), "bits": b, "depths": dict(sorted(depths.items())),
              "other_energy": rejects.get("other_energy", 0),
              "failed": sum(v for k, v in rejects.items() if k != "other_energy"),
              "rejects": dict(sorted(rejects.items()))}
    return ref, report


def load_reference(spec: str | Path, keep_suspect: bool = False,
                   salt: bytes | str | None = None):
    """A reference from a saved ``.npz``, a DICOM folder (low-energy mammograms pooled) or a
    single DICOM mammogram (used whatever its energy class). ``salt``: the run's
    pseudonymisation salt (see :func:`build_reference`)."""
    from .harmonize import Reference

    path = Path(spec)
    if not path.exists():
        raise ReferenceError_(path, "reference not found", tag="--ref", value=str(spec),
                              hint="build one with `mammoprep reference DIR -o ref.npz`")
    if path.suffix.lower() == ".npz":
        return Reference.load(path)
    ref, _ = build_reference([path], energy="low" if path.is_dir() else None,
                             keep_suspect=keep_suspect, salt=salt,
                             on_error=lambda e: print(f"reference: skipped {e}", file=sys.stderr))
    return ref
