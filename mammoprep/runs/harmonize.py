"""Harmonising files into files (``mammoprep harmonize``): per input, read -> remove text and
CDF-match -> write (a derived DICOM or a 16-bit PNG) and one log row.

In one process the three stages overlap (:func:`harmonize_serial`: a reader thread, this
thread's kernels, writer threads); with ``-j N`` each pool worker runs that pipeline over
batches of jobs (:func:`harmonize_batch`, warmed by :func:`warm_worker`), through
:class:`mammoprep.batch.Runner`. Output paths mirror the inputs below their common folder
(:func:`output_paths`). Numba is only loaded where images are processed, so that a pool can
still be forked (:func:`mammoprep.batch.start_method`).
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..atomic import atomic_write, write_error
from ..batch import Job, Runner, as_reject, batch_size, process_worker_start
from ..io.derived import write_derived_dicom
from ..io.header import read_header_dataset
from ..io.paths import DICOM_SUFFIXES, iter_dicom_paths
from ..io.png import encode_png16, write_png16
from ..pipeline import prepared, preprocess, read_image
from ..record import Record
from ..runtime import started

log = logging.getLogger(__name__)

#: zlib/libdeflate level of `harmonize --format png`, chosen by measurement (benchmarks/
#: RESULTS.md, "PNG compression level"): the knee of size vs time.
PNG_LEVEL = 1

#: Writer threads of a process's pipeline: two, so that one file's fsync (or a PNG's
#: deflate, which releases the GIL) overlaps the next one's write.
WRITERS = 2


def write_output(rec: Record, job: Job, header=None) -> None:
    """Write one processed record as a 16-bit PNG or a derived DICOM (de-identified unless
    ``job.keep_identity``; see :mod:`mammoprep.io.derived`)."""
    Path(job.dest).parent.mkdir(parents=True, exist_ok=True)
    if job.fmt == "png":
        write_png16(job.dest, rec.pixels, level=PNG_LEVEL)
        return
    m = rec.meta
    what = ["decoded", "MONOCHROME1 inverted" if m.get("inverted") else None,
            f"burned-in text removed ({m.get('removed_fraction', 0):.2%} of non-zero "
            "pixels)",
            "CDF-matched to a low-energy reference (mammoprep, LUMINA protocol)"
            if m.get("harmonized") else "not harmonised (energy rule)"]
    write_derived_dicom(job.src, rec, job.dest, "mammoprep: " + "; ".join(w for w in what if w),
                        uid_salt=job.cfg.digest(), salt=job.salt,
                        keep_identity=job.keep_identity, header=header)


def error_row(job: Job, exc: Exception) -> dict:
    """Log row of a reject: the error ``kind`` (e.g. ``segmentation_suspect``) and message;
    an unexpected exception is wrapped as a typed error naming the file."""
    err = as_reject(exc, job.src, "harmonisation")
    return {"input": str(job.src), "output": str(job.dest), "status": "error",
            "kind": err.kind, "error": str(err)}


def read_one(job: Job):
    """Stage 0 (mostly I/O, run ahead by a reader thread): decode the file, and for DICOM
    output also parse its header for the writer (so that only this thread reads files:
    reading captures this thread's warnings, see :func:`mammoprep.decoders.codec_messages`).
    ``(record, None, header)`` or ``(None, the exception, None)``; never raises."""
    try:
        rec = read_image(job.src, prepared(job.cfg), salt=job.salt)
        header = None
        if job.fmt != "png":
            header = read_header_dataset(job.src)[0]
        return rec, None, header
    except Exception as exc:  # noqa: BLE001 - reported as the file's row by process_one
        return None, exc, None


def process_one(job: Job, read: tuple | None = None):
    """Stage 1 (CPU): read (unless ``read``, :func:`read_one`'s result, is given), remove
    text, harmonise. ``(record, None)`` or ``(None, error row)``; never raises."""
    try:
        if read is not None and read[1] is not None:
            raise read[1]
        return preprocess(job.src, prepared(job.cfg), salt=job.salt,
                          read=None if read is None else read[0]), None
    except Exception as exc:  # noqa: BLE001 - one bad file must not end the batch
        return None, error_row(job, exc)


def write_one(job: Job, rec: Record, header=None) -> dict:
    """Stage 2 (mostly I/O): write ``rec``; the log row. ok rows carry the energy class,
    whether it was matched, the SOP UID hash and the segmentation QC fields
    (:data:`mammoprep.segmentation.foreground.QC_FIELDS`). Never raises."""
    try:
        write_output(rec, job, header=header)
    except Exception as exc:  # noqa: BLE001 - one bad file must not end the batch
        if isinstance(exc, OSError):  # e.g. mkdir refused: typed, naming the output
            exc = write_error(job.dest, exc)
        return error_row(job, exc)
    from ..segmentation.foreground import qc_fields  # Numba: loaded by the worker only

    m = rec.meta
    return {"input": str(job.src), "output": str(job.dest), "status": "ok",
            "energy": m.get("energy"), "harmonized": bool(m.get("harmonized")),
            "sop_uid_hash": m.get("sop_uid_hash"), **qc_fields(m)}


def harmonize_serial(jobs: list[Job], done, writers: int = WRITERS) -> list[dict]:
    """The rows of ``jobs`` in order, in overlapping stages (``-j 1``, and each batch of a
    pool worker): a reader thread decodes file ``i + 1`` while this thread removes text
    from and harmonises file ``i`` (Numba kernels, which release the GIL) and ``writers``
    writer threads write the files before it. At most ``writers + 2`` images are in memory.
    ``done(1)`` after each row."""
    rows: list[dict] = []
    queue: deque = deque()  # rows in input order: a Future (being written) or a dict

    def flush(keep: int) -> None:
        while len(queue) > keep:
            item = queue.popleft()
            rows.append(item if isinstance(item, dict) else item.result())
            done(1)

    reader, writer = stage_threads(writers)
    ahead = reader.submit(read_one, jobs[0]) if jobs else None
    if jobs:  # load the kernels while the first file is read
        warm(prepared(jobs[0].cfg))
        ahead.result()  # the reader's imports are done too: start-up is over
    started()
    try:
        for i, job in enumerate(jobs):
            read = ahead.result()
            ahead = reader.submit(read_one, jobs[i + 1]) if i + 1 < len(jobs) else None
            rec, row = process_one(job, read[:2])
            header = read[2]
            del read
            flush(writers - 1)  # wait for the oldest write before starting another
            queue.append(row if rec is None else writer.submit(write_one, job, rec, header))
            del rec, header
    finally:  # the files already handed to the threads are finished either way
        if ahead is not None:
            ahead.result()
        flush(0)
    return rows


_STAGES: dict[int, tuple] = {}


def stage_threads(writers: int) -> tuple:
    """(reader, writer) thread pools of this process, made on first use and kept for the
    next batch or run (their threads keep their aligned write buffers: made again per
    batch, those cost fresh pages of memory every time)."""
    if writers not in _STAGES:
        _STAGES[writers] = (ThreadPoolExecutor(1, thread_name_prefix="mammoprep-reader"),
                            ThreadPoolExecutor(writers, thread_name_prefix="mammoprep-writer"))
    return _STAGES[writers]


def harmonize_batch(jobs: list[Job]) -> list[dict]:
    """Pool worker: :func:`harmonize_serial` over one batch of files (their rows)."""
    return harmonize_serial(jobs, lambda n: None)


_warmed = False


def warm(prep) -> None:
    """Load the chain's Numba kernels (from the cache) and codecs once per process, on a
    small synthetic breast, so that the first real file pays nothing extra (a pool worker's
    later batches find them loaded). Best effort."""
    global _warmed
    if _warmed:
        return
    _warmed = True
    yy, xx = np.mgrid[:128, :96]
    breast = ((yy - 64) / 60.0) ** 2 + (xx / 80.0) ** 2 < 1
    px = np.where(breast, 600 + (yy * 13 + xx * 7) % 900, 0).astype(np.uint16)
    try:
        import pydicom  # noqa: F401 - the reader's import, paid here

        from ..segmentation.foreground import remove_text
        from ..harmonise.match import harmonize

        rec = remove_text(Record(px, {"bits_stored": 12, "steps": ["decode"]}),
                          keep_suspect=True)
        if prep.reference is not None:
            harmonize(rec, prep.reference)
        encode_png16(px[:8, :8], PNG_LEVEL)
    except Exception:  # noqa: BLE001 - warming must never fail a run
        pass


def warm_worker(cfg) -> None:
    """A pool worker's warm-up (:func:`mammoprep.batch.process_worker_start`): load the
    reference and energy table of ``cfg`` and the kernels before the first file."""
    warm(prepared(cfg))


def unique(paths) -> list[Path]:
    """``paths`` in order, each file once (by absolute path)."""
    seen: set[str] = set()
    out = []
    for p in paths:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def common_root(inputs: list[Path]) -> Path:
    """Deepest folder holding every input (a folder input counts as itself, a file input
    as its parent); absolute, symlinks not resolved."""
    dirs = [os.path.abspath(p) if Path(p).is_dir() else os.path.dirname(os.path.abspath(p))
            for p in inputs]
    return Path(os.path.commonpath(dirs))


def mirror(src: Path, root: Path, out: Path, suffix: str) -> Path:
    """OUT/<path of src relative to ``root``>, its DICOM suffix replaced by ``suffix`` (a
    name without a DICOM suffix, e.g. ``1.2.840.5``, keeps its name and gains ``suffix``)."""
    rel = Path(os.path.abspath(src)).relative_to(root)
    if rel.suffix.lower() in DICOM_SUFFIXES:
        return out / rel.with_suffix(suffix)
    return out / rel.parent / (rel.name + suffix)


def collisions(pairs: list[tuple]) -> list[tuple[str, str, str]]:
    """(output, first input, second input) for every output claimed by two inputs
    (``pairs``: (input, output))."""
    first: dict[str, str] = {}
    clashes = []
    for src, dest, *_ in pairs:
        key = os.path.normcase(os.path.abspath(dest))
        if key in first:
            clashes.append((str(dest), first[key], str(src)))
        else:
            first[key] = str(src)
    return clashes


def outside(files: list[Path], out: Path) -> list[Path]:
    """``files`` less those below the output folder ``out`` (symlinks resolved): with OUT
    inside IN, a rerun finds the outputs of the earlier run among its inputs; they are
    results, not inputs, and are left out with a warning."""
    root = os.path.realpath(out)
    kept = [f for f in files
            if os.path.commonpath([root, os.path.realpath(f)]) != root]
    if len(kept) < len(files):
        log.warning("left out %d file(s) under the output folder %s (outputs of an earlier "
                    "run, not inputs)", len(files) - len(kept), out)
    return kept


class OutputPathsError(ValueError):
    """The inputs cannot be mirrored under the output folder (no input, two inputs to one
    output, an output that is an input); nothing has been written. The message says which."""


def output_paths(inputs, out: Path, fmt: str) -> tuple[list[Path], list[Path]]:
    """(input files, their outputs): every DICOM under ``inputs`` once, and its path below
    the inputs' common folder mirrored under ``out`` (suffix ``.png`` or ``.dcm``).
    Raises :class:`OutputPathsError`."""
    # one file named twice (e.g. a folder and a file inside it, spelt differently) is one input
    files = outside(list(unique(iter_dicom_paths(inputs))), out)
    if not files:
        raise OutputPathsError("no DICOM files found")
    suffix = ".png" if fmt == "png" else ".dcm"
    root = common_root(list(inputs))
    dests = [mirror(f, root, out, suffix) for f in files]
    clashes = collisions([(f, d) for f, d in zip(files, dests)])
    if clashes:
        lines = "\n".join(f"  {src1} and {src2} -> {dest}" for dest, src1, src2 in clashes)
        raise OutputPathsError(f"{len(clashes)} output path(s) would be written twice; "
                               f"nothing was written:\n{lines}\nrename one of each pair or "
                               "harmonise them in separate runs")
    inputs_abs = {os.path.abspath(f) for f in files}
    for dest in dests:
        if os.path.abspath(dest) in inputs_abs:
            raise OutputPathsError(f"output {dest} would overwrite an input; choose another -o")
    return files, dests


def harmonize_jobs(jobs: list[Job], workers: int, started_progress,
                   runner: Runner | None = None) -> list[dict]:
    """The log rows of ``jobs``, in order: on ``runner`` if given (a Dask cluster's: each
    task a batch of files, :func:`harmonize_batch`), else in this process (``workers`` 1,
    :func:`harmonize_serial`) or on a pool of ``workers`` processes, each with its share of
    the cores as Numba threads, fed batches (:func:`mammoprep.batch.batch_size`).
    ``started_progress()`` is called once the workers have started (a progress bar's monitor
    thread must not exist before a fork) and returns the ``progress(n)`` callback. A given
    ``runner`` is left open (its owner closes it); a local pool is closed here."""
    if runner is None and workers <= 1:
        return harmonize_serial(jobs, started_progress())
    started()  # this process loads no kernels
    own = runner is None
    if runner is None:
        threads = max(1, (os.cpu_count() or 1) // workers)
        runner = Runner(workers, start="auto", initializer=process_worker_start,
                        initargs=(threads, "mammoprep.runs.harmonize:warm_worker",
                                  jobs[0].cfg))
    # every batch is submitted here, which starts the workers
    results = runner.map_batches(harmonize_batch, jobs, batch_size(len(jobs), runner.workers))
    progress = started_progress()
    rows: list[dict] = []
    try:
        for got in results:
            rows.extend(got)
            progress(len(got))
    finally:
        if own:
            runner.close()
    return rows


def _jsonable(value):
    """NumPy scalars and other odd values in a log row -> JSON."""
    return value.item() if hasattr(value, "item") else str(value)


def write_log(out: Path, rows: list[dict]) -> None:
    """``OUT/harmonize_log.jsonl``: one JSON row per input, atomically."""
    atomic_write(out / "harmonize_log.jsonl", "".join(
        json.dumps(row, default=_jsonable) + "\n" for row in rows).encode())
