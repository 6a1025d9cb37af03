"""Build or load the low-energy harmonisation reference (``--ref``).

A reference is the pooled foreground histogram of a set of low-energy mammograms, after
the same decoding and text removal as the images it will be applied to, each image's
histogram rescaled from its own bit depth to the reference depth, stored with its bit depth
and the hashed list, depth and vendor of contributing images
(:class:`mammoprep.harmonise.match.Reference`). Anything that is not a mammogram, or cannot be
read or segmented, is left out with a typed reason and counted; the rest still makes the
reference. ``--ref`` accepts a saved ``.npz``, a folder of DICOMs, or one DICOM file.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

from ..batch import Job, Runner, as_reject
from ..errors import MammoprepError, ReferenceError_, display_path
from ..histogram import foreground_histogram
from ..identity import resolve_salt
from ..io.dicom import read_dicom
from ..io.header import read_header
from ..io.mammogram import mammogram_evidence, not_mammogram_error
from ..io.paths import iter_dicom_paths
from .energy import energy_class, load_energy_table
from .match import Reference, rescale_histogram


def is_mammogram(meta: Mapping[str, Any], named_by_table: bool = False) -> bool:
    """True if the header's evidence says mammogram
    (:func:`mammoprep.io.mammogram.mammogram_evidence`: Modality ``MG``, a mammography SOP
    class, or a radiograph with laterality, a breast view or Body Part BREAST and nothing
    that says otherwise)."""
    return mammogram_evidence(meta, named_by_table)[0]


def check_mammogram(meta: Mapping[str, Any], path: str | Path | None = None) -> None:
    """Raise :class:`~mammoprep.errors.NotMammogramError` naming the tag and value that
    decided unless :func:`is_mammogram`."""
    err = not_mammogram_error(meta, path, "the reference")
    if err is not None:
        raise err


class DuplicateImageError(MammoprepError):
    """The same image (same SOP Instance UID) met a second time: pooled once only."""

    kind = "duplicate"


@dataclass(frozen=True)
class _Contribution:
    """One image pooled into a reference (identity-free)."""

    image_hash: str
    bits: int
    vendor: str
    evidence: str  # why it counts as a mammogram (:func:`mammogram_evidence`)


def _with_path(err: MammoprepError, path: Path) -> MammoprepError:
    """The same typed error, naming ``path`` if it did not already."""
    if err.path is not None:
        return err
    return type(err)(path, err.problem, tag=err.tag, value=err.value, hint=err.hint)


@dataclass(frozen=True)
class _Pooling:
    """What every file of a reference needs besides its path (sent with each job)."""

    energy: str | None
    energy_table: str | None
    keep_suspect: bool


def _duplicate(path: Path, first: Path) -> DuplicateImageError:
    return DuplicateImageError(path, f"the same image was already pooled (from {first})",
                               tag="(0008,0018) SOP Instance UID",
                               value="same as an earlier file",
                               hint="it counts once in the reference")


def histogram_job(job: Job, seen: dict[str, Path] | None = None):
    """One file of a reference (in this process or on a worker): ``(path, image hash,
    outcome)``. The outcome is ``'no_manufacturer'`` / ``'other_energy'`` (another energy
    class: image hash None), a typed error, or (contribution, foreground histogram at the
    image's own depth). ``seen`` (hash -> the file it was pooled from; in this process
    only) stops a duplicate before it is decoded; elsewhere the caller finds it from the
    hash (:func:`build_reference`). Never raises."""
    path = Path(job.src)
    how: _Pooling = job.cfg
    sop = None
    try:
        header = read_header(path, salt=job.salt)  # cheap: decide before decoding
        check_mammogram(header, path)
        if how.energy:
            table = load_energy_table(how.energy_table)
            got = energy_class(header.get("manufacturer", ""), header.get("model", ""), table,
                               path=path)
            if got != how.energy:  # unknown for want of a Manufacturer (not a table's say)?
                return path, None, (
                    "no_manufacturer" if got == "unknown" and not header.get("manufacturer")
                    and table.image_energy(path) is None else "other_energy")
        sop = header.get("sop_uid_hash") or None
        if seen is not None and sop in seen:
            raise _duplicate(path, seen[sop])
        return path, sop, _histogram(path, header, job.salt, job.decoder, how.keep_suspect)
    except MammoprepError as err:
        return path, sop, _with_path(err, path)
    except Exception as exc:  # noqa: BLE001 - one bad file must not end the batch
        return path, sop, as_reject(exc, path, "reference building")


def _histogram(path: Path, header, salt: bytes, decoder, keep_suspect: bool):
    """(contribution, foreground histogram at the image's own depth) of a mammogram whose
    header is ``header``. Raises typed errors (unreadable, segmentation suspect, ...)."""
    from ..segmentation.foreground import remove_text

    rec = remove_text(read_dicom(path, salt=salt, decoder=decoder), keep_suspect=keep_suspect)
    bits = int(rec.meta.get("value_bits") or rec.meta["bits_stored"])  # not harmonised
    hist = foreground_histogram(rec.pixels, bits)
    return _Contribution(rec.meta["sop_uid_hash"], bits, rec.meta.get("manufacturer", ""),
                         mammogram_evidence(header)[1]), hist


def build_reference(inputs: Iterable[str | Path], *, energy: str | None = "low",
                    energy_table: str | None = None, bits: int | None = None,
                    salt: bytes | str | None = None, decoder: str | None = None,
                    keep_suspect: bool = False,
                    progress: Callable[[int], None] | None = None,
                    on_error: Callable[[MammoprepError], None] | None = None,
                    runner: Runner | None = None):
    """Pool the foreground histograms of the mammograms under ``inputs``.

    Only mammograms are pooled (:func:`is_mammogram`). Each image's histogram is taken at
    its own depth (Bits Stored, or the value depth after a Modality LUT) and rescaled to the
    reference depth with :func:`mammoprep.harmonise.match.rescale_histogram` before pooling, so
    10-, 12- and 14-bit images put the same tissue on the same levels.

    energy: keep only images of this energy class (metadata only), None for all.
    bits: reference bit depth; default the largest depth among contributing images.
    keep_suspect: pool images whose segmentation fails the quality gate instead of
        rejecting them (``segmentation_suspect``).
    on_error: called with the typed error of every file left out for a reason other than
        its energy class; no per-file failure stops the batch (unexpected exceptions are
        wrapped as :class:`~mammoprep.errors.UnexpectedError` naming the file).
    runner: where the files are read (:class:`mammoprep.batch.Runner`, e.g. a Dask
        cluster's); default this process. The reference is the same either way.

    Returns (reference, report): report has ``used``, ``bits``, ``depths`` (images per
    source depth), ``evidence`` (images per mammogram evidence, e.g. ``{'modality MG': 3,
    'dx + image laterality': 4}``), ``other_energy``, ``no_manufacturer`` (of those: files
    of unknown energy class without (0008,0070) Manufacturer), ``failed`` (all other
    rejects) and ``rejects`` (count per reason: ``other_energy``, ``not_mammogram``,
    ``segmentation_suspect``, ``duplicate`` (the same SOP Instance UID pooled once
    only), ...). The reference records each image's evidence (``image_evidence``).
    Raises :class:`~mammoprep.errors.ReferenceError_` when no image can be used (naming the
    files without Manufacturer, if any, and the two ways on).
    """
    import numpy as np

    load_energy_table(energy_table)  # a bad table fails here, once
    salt_b = salt if isinstance(salt, bytes) else resolve_salt(salt)  # once, not per file
    used: list[_Contribution] = []
    pooled: dict[int, np.ndarray] = {}  # source depth -> summed histogram at that depth
    rejects: dict[str, int] = {}
    unknown: list[Path] = []  # files of unknown energy class without a Manufacturer
    seen: dict[str, Path] = {}  # image hash -> the file it was pooled from
    runner = Runner.of(runner)
    # in this process the jobs run one by one as results are taken, so ``seen`` is current
    one = partial(histogram_job, seen=seen if runner.in_process else None)
    how = _Pooling(energy, energy_table, keep_suspect)
    jobs = [Job(str(p), cfg=how, salt=salt_b, decoder=decoder)
            for p in iter_dicom_paths(inputs)]
    for path, sop, got in runner.map(one, jobs):
        if sop and sop in seen and not isinstance(got, DuplicateImageError):
            got = _duplicate(path, seen[sop])  # decoded elsewhere: pooled once all the same
        if isinstance(got, str):  # another (or unknown) energy class
            rejects["other_energy"] = rejects.get("other_energy", 0) + 1
            if got == "no_manufacturer":
                unknown.append(path)
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
        raise _nothing_used(energy, inputs, rejects, unknown)
    return _pool(used, pooled, bits, rejects, unknown)


def unknown_energy_note(count: int, example: str | Path | None = None) -> str:
    """'N file(s) have no (0008,0070) Manufacturer, so their energy class is unknown' and
    the two ways on (pool whatever the energy, or an energy table mapping what the archive
    has)."""
    eg = f" (e.g. {display_path(example)})" if example is not None else ""
    return (f"{count} file(s) have no (0008,0070) Manufacturer, so their energy class is "
            f"unknown{eg}: pool them whatever their energy class with --energy any, or pass "
            "--energy-table with a CSV that maps what the archive does have (columns image,"
            "energy: one row per file, e.g. built from RSNA train.csv's machine_id; README, "
            "'Energy classes')")


def _nothing_used(energy: str | None, inputs, rejects: dict[str, int],
                  unknown: list[Path]) -> ReferenceError_:
    """The error when no image could be pooled: what was left out, and why."""
    left = ", ".join(f"{k} {v}" for k, v in sorted(rejects.items())) or "nothing"
    what = f"no {'%s-energy ' % energy if energy else ''}mammogram could be used for the " \
           "reference"
    if unknown:
        return ReferenceError_(None, what, tag="(0008,0070) Manufacturer",
                               value=f"absent in {len(unknown)} file(s)",
                               hint=unknown_energy_note(len(unknown), unknown[0])
                               + f"; left out: {left}")
    return ReferenceError_(None, what, tag="inputs", value=[str(p) for p in inputs],
                           hint="pass low-energy mammograms (see manifests/energy_classes.csv)"
                                f" or --energy any; left out: {left}")


def _pool(used: list[_Contribution], pooled: dict, bits: int | None, rejects: dict[str, int],
          unknown: list[Path]):
    """(reference, report) of :func:`build_reference` from the pooled per-depth histograms."""
    b = bits or max(item.bits for item in used)
    unit = max(0, b - min(pooled))  # every pixel weighs 2^unit so that spreading is exact
    hist = sum(rescale_histogram(h, k, b, unit) for k, h in sorted(pooled.items()))
    used.sort(key=lambda item: item.image_hash)
    ref = Reference(hist, b, tuple(i.image_hash for i in used), len(used),
                    tuple(i.bits for i in used), tuple(i.vendor for i in used),
                    tuple(i.evidence for i in used))
    depths: dict[int, int] = {}
    for item in used:
        depths[item.bits] = depths.get(item.bits, 0) + 1
    report = {"used": len(used), "bits": b, "depths": dict(sorted(depths.items())),
              "evidence": ref.evidence_counts(),
              "other_energy": rejects.get("other_energy", 0),
              "no_manufacturer": len(unknown),
              "no_manufacturer_example": str(unknown[0]) if unknown else None,
              "failed": sum(v for k, v in rejects.items() if k != "other_energy"),
              "rejects": dict(sorted(rejects.items()))}
    return ref, report


def load_reference(spec: str | Path, keep_suspect: bool = False,
                   salt: bytes | str | None = None, energy_table: str | None = None,
                   runner: Runner | None = None):
    """A reference from a saved ``.npz``, a DICOM folder (low-energy mammograms pooled, their
    class from ``energy_table``, default the shipped one) or a single DICOM mammogram (used
    whatever its energy class). ``salt``: the run's pseudonymisation salt (see
    :func:`build_reference`); ``runner``: where a folder's files are read."""
    path = Path(spec)
    if not path.exists():
        raise ReferenceError_(path, "reference not found", tag="--ref", value=str(spec),
                              hint="build one with `mammoprep reference DIR -o ref.npz`")
    if path.suffix.lower() == ".npz":
        return Reference.load(path)
    ref, _ = build_reference([path], energy="low" if path.is_dir() else None,
                             energy_table=energy_table, keep_suspect=keep_suspect, salt=salt,
                             runner=runner,
                             on_error=lambda e: print(f"reference: skipped {e}", file=sys.stderr))
    return ref
