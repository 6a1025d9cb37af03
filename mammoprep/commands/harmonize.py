"""`mammoprep reference`, `mammoprep harmonize` and `mammoprep preview`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..options import (ENERGY_TABLE_HELP, bar_disabled, decoder_option, keep_suspect_option,
                       progress_bar, salt_option)

_ENERGY = click.Choice(["low", "high", "any"])


_jobs_option = click.option(
    "-j", "--jobs", type=click.IntRange(min=0), default=0, show_default=True,
    help="Worker processes. 0 = auto: one per core. Each worker (or this process, with "
         "-j 1) reads the next file and writes the previous ones in threads while its "
         "kernels work on the current one; files go to workers in batches. Measured on 2 "
         "cores: benchmarks/RESULTS.md.")


def auto_jobs(cores: int | None = None) -> int:
    """``-j 0``: one worker per core (1 = no pool, in this process)."""
    return max(1, cores or os.cpu_count() or 1)


#: At most this many files per batch sent to a worker: large enough that a batch's
#: pipeline start and drain (one unoverlapped read, the last writes) stay small, small
#: enough for the progress bar and for the workers to finish together.
MAX_BATCH = 32


def batch_size(files: int, workers: int, most: int = MAX_BATCH) -> int:
    """Files per batch: the fewest equal rounds of one batch per worker with batches of at
    most ``most`` files (24 files on 2 workers: 12; 96: 24; a million: 32)."""
    if files <= 0 or workers <= 0:
        return 1
    rounds = -(-files // (workers * most))
    return max(1, -(-files // (workers * rounds)))


def _reasons(counts: dict[str, int]) -> str:
    """'not_mammogram 3, truncated 1' (sorted by reason), or 'none'."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


@click.command("reference")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Reference file to write (.npz).")
@click.option("--energy", type=_ENERGY, default="low", show_default=True,
              help="Pool only images of this energy class (from metadata: Manufacturer / "
                   "Model Name, or --energy-table), or any. Files without (0008,0070) "
                   "Manufacturer are of unknown class: counted, with the two ways on.")
@click.option("--bits", type=click.IntRange(1, 16), default=None,
              help="Reference bit depth; each image's histogram is rescaled from its own depth "
                   "to it (default: the largest bit depth of the images used).")
@click.option("--energy-table", type=click.Path(exists=True, dir_okay=False), default=None,
              help=ENERGY_TABLE_HELP)
@keep_suspect_option
@decoder_option
@salt_option
def reference_cmd(inputs, out, energy, bits, energy_table, keep_suspect, decoder, salt):
    """Pool the foreground histograms of low-energy mammograms into a reference (.npz).

    Only mammograms are pooled: Modality MG, a mammography SOP Class UID, or a radiograph
    with Image Laterality, a breast view or Body Part BREAST and nothing that says otherwise
    (a CR chest, a CT, ... are left out and counted; README, "What counts as a mammogram").
    Images go through the same decoding and burned-in text removal
    as at harmonisation time; each histogram is rescaled from the image's bit depth to the
    reference depth before pooling. A file that cannot be used is reported with its reason
    and the reference is written from the rest. The file stores the pooled histogram, its
    bit depth, and the hash, bit depth, vendor and mammogram evidence of each contributing
    image.
    """
    from tqdm import tqdm

    from ..io.dicom import iter_dicom_paths
    from ..errors import MammoprepError
    from ..harmonise.reference import build_reference, unknown_energy_note

    files = list(iter_dicom_paths(inputs))
    with tqdm(total=len(files), desc="reference", unit="file", file=sys.stderr,
              disable=True if len(files) < 2 else bar_disabled()) as bar:
        try:
            ref, report = build_reference(
                files, energy=None if energy == "any" else energy, energy_table=energy_table,
                bits=bits, salt=salt, decoder=decoder, keep_suspect=keep_suspect,
                progress=bar.update,
                on_error=lambda e: tqdm.write(f"left out ({e.kind}): {e}", file=sys.stderr))
        except MammoprepError as err:
            raise click.ClickException(str(err))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        ref.save(out)  # atomic; a full disk is a WriteError naming the file
    except OSError as exc:
        from ..atomic import write_error

        raise click.ClickException(str(write_error(out.parent, exc)))
    except MammoprepError as err:
        raise click.ClickException(str(err))
    depths = ", ".join(f"{n} x {k}-bit" for k, n in report["depths"].items())
    click.echo(f"reference {out}: {report['used']} images ({depths}) pooled at "
               f"{report['bits']}-bit; {sum(report['rejects'].values())} left out: "
               f"{_reasons(report['rejects'])}")
    click.echo(f"mammograms by evidence: {_reasons(report['evidence'])}")
    if report["no_manufacturer"]:
        click.echo("note: " + unknown_energy_note(report["no_manufacturer"],
                                                  report["no_manufacturer_example"]), err=True)


#: zlib/libdeflate level of `harmonize --format png`, chosen by measurement (benchmarks/
#: RESULTS.md, "PNG compression level"): the knee of size vs time.
PNG_LEVEL = 1


def _jsonable(value):
    """NumPy scalars and other odd values in a log row -> JSON."""
    return value.item() if hasattr(value, "item") else str(value)


def _write_output(rec, src: str, dest: str, fmt: str, cfg, salt: bytes | None = None,
                  keep_identity: bool = False, header=None) -> None:
    """Write one processed record as a 16-bit PNG or a derived DICOM (de-identified unless
    ``keep_identity``; see :mod:`mammoprep.io.derived`)."""
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    if fmt == "png":
        from ..io.png import write_png16

        write_png16(dest, rec.pixels, level=PNG_LEVEL)
        return
    from ..io.derived import write_derived_dicom

    m = rec.meta
    what = ["decoded", "MONOCHROME1 inverted" if m.get("inverted") else None,
            f"burned-in text removed ({m.get('removed_fraction', 0):.2%} of non-zero "
            "pixels)",
            "CDF-matched to a low-energy reference (mammoprep, LUMINA protocol)"
            if m.get("harmonized") else "not harmonised (energy rule)"]
    write_derived_dicom(src, rec, dest, "mammoprep: " + "; ".join(w for w in what if w),
                        uid_salt=cfg.digest(), salt=salt, keep_identity=keep_identity,
                        header=header)


def _error_row(job: tuple, exc: Exception) -> dict:
    """Log row of a reject: the error ``kind`` (e.g. ``segmentation_suspect``) and message;
    an unexpected exception is wrapped as a typed error naming the file."""
    from ..errors import MammoprepError, UnexpectedError

    src, dest = job[0], job[1]
    err = exc if isinstance(exc, MammoprepError) else \
        UnexpectedError.wrap(src, exc, "harmonisation")
    return {"input": str(src), "output": str(dest), "status": "error", "kind": err.kind,
            "error": str(err)}


def _read_one(job: tuple):
    """Stage 0 (mostly I/O, run ahead by a reader thread): decode the file, and for DICOM
    output also parse its header for the writer (so that only this thread reads files:
    reading captures this thread's warnings, see :func:`mammoprep.decoders.codec_messages`).
    ``(record, None, header)`` or ``(None, the exception, None)``; never raises."""
    src, _, fmt, cfg, salt, *_ = job
    try:
        from ..pipeline import read_image

        rec = read_image(src, _prepared(cfg), salt=salt)
        header = None
        if fmt != "png":
            from ..io.dicom import read_header_dataset

            header = read_header_dataset(src)[0]
        return rec, None, header
    except Exception as exc:  # noqa: BLE001 - reported as the file's row by _process_one
        return None, exc, None


def _process_one(job: tuple, read: tuple | None = None):
    """Stage 1 (CPU): read (unless ``read``, :func:`_read_one`'s result, is given), remove
    text, harmonise. ``(record, None)`` or ``(None, error row)``; never raises."""
    src, _, _, cfg, salt, *_ = job
    try:
        from ..pipeline import preprocess

        if read is not None and read[1] is not None:
            raise read[1]
        return preprocess(src, _prepared(cfg), salt=salt,
                          read=None if read is None else read[0]), None
    except Exception as exc:  # noqa: BLE001 - one bad file must not end the batch
        return None, _error_row(job, exc)


def _write_one(job: tuple, rec, header=None) -> dict:
    """Stage 2 (mostly I/O): write ``rec``; the log row. ok rows carry the energy class,
    whether it was matched, the SOP UID hash and the segmentation QC fields
    (:data:`mammoprep.segmentation.foreground.QC_FIELDS`). Never raises."""
    src, dest, fmt, cfg, salt, *rest = job
    keep_identity = bool(rest and rest[0])
    try:
        _write_output(rec, src, dest, fmt, cfg, salt=salt, keep_identity=keep_identity,
                      header=header)
    except Exception as exc:  # noqa: BLE001 - one bad file must not end the batch
        if isinstance(exc, OSError):  # e.g. mkdir refused: typed, naming the output
            from ..atomic import write_error

            exc = write_error(dest, exc)
        return _error_row(job, exc)
    from ..segmentation.foreground import qc_fields

    m = rec.meta
    return {"input": str(src), "output": str(dest), "status": "ok", "energy": m.get("energy"),
            "harmonized": bool(m.get("harmonized")), "sop_uid_hash": m.get("sop_uid_hash"),
            **qc_fields(m)}


#: Writer threads of a process's pipeline: two, so that one file's fsync (or a PNG's
#: deflate, which releases the GIL) overlaps the next one's write.
WRITERS = 2


def _harmonize_serial(jobs: list[tuple], done, writers: int = WRITERS) -> list[dict]:
    """The rows of ``jobs`` in order, in overlapping stages (``-j 1``, and each batch of a
    pool worker): a reader thread decodes file ``i + 1`` while this thread removes text
    from and harmonises file ``i`` (Numba kernels, which release the GIL) and ``writers``
    writer threads write the files before it. At most ``writers + 2`` images are in memory.
    ``done(1)`` after each row."""
    from collections import deque

    rows: list[dict] = []
    queue: deque = deque()  # rows in input order: a Future (being written) or a dict

    def flush(keep: int) -> None:
        while len(queue) > keep:
            item = queue.popleft()
            rows.append(item if isinstance(item, dict) else item.result())
            done(1)

    reader, writer = _stage_threads(writers)
    ahead = reader.submit(_read_one, jobs[0]) if jobs else None
    if jobs:  # load the kernels while the first file is read
        _warm(_prepared(jobs[0][3]))
        ahead.result()  # the reader's imports are done too: start-up is over
    from ..runtime import started

    started()
    try:
        for i, job in enumerate(jobs):
            read = ahead.result()
            ahead = reader.submit(_read_one, jobs[i + 1]) if i + 1 < len(jobs) else None
            rec, row = _process_one(job, read[:2])
            header = read[2]
            del read
            flush(writers - 1)  # wait for the oldest write before starting another
            queue.append(row if rec is None else writer.submit(_write_one, job, rec, header))
            del rec, header
    finally:  # the files already handed to the threads are finished either way
        if ahead is not None:
            ahead.result()
        flush(0)
    return rows


_STAGES: dict[int, tuple] = {}


def _stage_threads(writers: int) -> tuple:
    """(reader, writer) thread pools of this process, made on first use and kept for the
    next batch or run (their threads keep their aligned write buffers: made again per
    batch, those cost fresh pages of memory every time)."""
    from concurrent.futures import ThreadPoolExecutor

    if writers not in _STAGES:
        _STAGES[writers] = (ThreadPoolExecutor(1, thread_name_prefix="mammoprep-reader"),
                            ThreadPoolExecutor(writers, thread_name_prefix="mammoprep-writer"))
    return _STAGES[writers]


def _harmonize_batch(jobs: list[tuple]) -> list[dict]:
    """Pool worker: :func:`_harmonize_serial` over one batch of files (their rows)."""
    return _harmonize_serial(jobs, lambda n: None)


def _watch_parent(parent: int, every: float = 0.5) -> None:
    """In a pool worker: a daemon thread that ends this process once ``parent`` is gone
    (``kill -9`` of the command: the worker is handed to another parent). Without it a
    worker would finish its batch writing into an output folder no longer locked, then
    wait for work forever. A file it was writing stays a temporary, which the next run
    removes."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="mammoprep-parent-watch", daemon=True).start()


def _prepared(cfg):
    """Per-process loaded reference and energy table (:func:`mammoprep.pipeline.prepared`;
    the command has turned any reference into a ``.npz`` already, so no salt is needed)."""
    from ..pipeline import prepared

    return prepared(cfg)


_warmed = False


def _warm(prep) -> None:
    """Load the chain's Numba kernels (from the cache) and codecs once per process, on a
    small synthetic breast, so that the first real file pays nothing extra (a pool worker's
    later batches find them loaded). Best effort."""
    global _warmed
    if _warmed:
        return
    _warmed = True
    import numpy as np

    from ..record import Record

    yy, xx = np.mgrid[:128, :96]
    breast = ((yy - 64) / 60.0) ** 2 + (xx / 80.0) ** 2 < 1
    px = np.where(breast, 600 + (yy * 13 + xx * 7) % 900, 0).astype(np.uint16)
    try:
        import pydicom  # noqa: F401 - the reader's import, paid here

        from ..segmentation.foreground import remove_text
        from ..io.png import encode_png16

        rec = remove_text(Record(px, {"bits_stored": 12, "steps": ["decode"]}),
                          keep_suspect=True)
        if prep.reference is not None:
            from ..harmonise.match import harmonize

            harmonize(rec, prep.reference)
        encode_png16(px[:8, :8], PNG_LEVEL)
    except Exception:  # noqa: BLE001 - warming must never fail a run
        pass


def start_method() -> str:
    """How the pool starts its workers: ``fork`` on Linux while this process has no other
    thread and has not loaded Numba (a forked worker then skips the interpreter start and
    the imports it would repeat: 0.19 s of a 24-image run on 2 cores, benchmarks/
    RESULTS.md; GNU OpenMP, which Numba's kernels use, refuses a fork once it has run);
    ``spawn`` otherwise (other platforms, or library use in a busy process)."""
    import threading

    if (sys.platform.startswith("linux") and threading.active_count() == 1
            and "numba" not in sys.modules):
        return "fork"
    return "spawn"


def _worker_start(cfg, threads: int = 1) -> None:
    """Pool initializer: ``threads`` Numba threads per worker (set before Numba is
    imported), then load the reference and warm the kernels before the first file."""
    from ..runtime import keep_freed_images, start_up, started

    keep_freed_images()  # before this process's first thread (the watchdog's) starts
    _watch_parent(os.getppid())
    os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))
    start_up()
    try:
        from ..runtime import prepare_process

        prepare_process(threads)
    except Exception:  # noqa: BLE001
        pass
    try:
        _warm(_prepared(cfg))
    except Exception:  # noqa: BLE001 - a bad reference is reported per file
        pass
    started()


def _unique(paths) -> list[Path]:
    """``paths`` in order, each file once (by absolute path)."""
    seen: set[str] = set()
    out = []
    for p in paths:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _common_root(inputs: list[Path]) -> Path:
    """Deepest folder holding every input (a folder input counts as itself, a file input
    as its parent); absolute, symlinks not resolved."""
    dirs = [os.path.abspath(p) if Path(p).is_dir() else os.path.dirname(os.path.abspath(p))
            for p in inputs]
    return Path(os.path.commonpath(dirs))


def _mirror(src: Path, root: Path, out: Path, suffix: str) -> Path:
    """OUT/<path of src relative to ``root``>, its DICOM suffix replaced by ``suffix`` (a
    name without a DICOM suffix, e.g. ``1.2.840.5``, keeps its name and gains ``suffix``)."""
    from ..io.dicom import DICOM_SUFFIXES

    rel = Path(os.path.abspath(src)).relative_to(root)
    if rel.suffix.lower() in DICOM_SUFFIXES:
        return out / rel.with_suffix(suffix)
    return out / rel.parent / (rel.name + suffix)


def _collisions(jobs: list[tuple]) -> list[tuple[str, str, str]]:
    """(output, first input, second input) for every output claimed by two inputs."""
    first: dict[str, str] = {}
    clashes = []
    for src, dest, *_ in jobs:
        key = os.path.normcase(os.path.abspath(dest))
        if key in first:
            clashes.append((str(dest), first[key], str(src)))
        else:
            first[key] = str(src)
    return clashes


@click.command("harmonize")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--ref", "ref", required=True, metavar="REF",
              help="Reference: a .npz from `mammoprep reference`, a folder of DICOMs (its "
                   "low-energy mammograms are pooled) or a single DICOM mammogram.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder; the layout of the inputs below their common folder is "
                   "mirrored under it.")
@click.option("--format", "fmt", type=click.Choice(["dicom", "png"]), default="dicom",
              show_default=True, help="Derived DICOM (uncompressed MONOCHROME2) or 16-bit PNG.")
@click.option("--only-energy", type=click.Choice(["high", "low"]), default=None,
              help="Harmonise only this energy class; the others are written with text "
                   "removed but not matched. Default: all.")
@click.option("--energy-table", type=click.Path(exists=True, dir_okay=False), default=None,
              help=ENERGY_TABLE_HELP)
@click.option("--orient-left", is_flag=True,
              help="Flip images so the chest wall is on the left (recorded).")
@click.option("--voi", is_flag=True, help="Apply the VOI LUT/window first (default: no).")
@keep_suspect_option
@click.option("--keep-identity", is_flag=True,
              help="Derived DICOMs keep the source header with its patient identifiers "
                   "(only for writing back into the source PACS). Default: de-identified "
                   "(PS3.15 Basic Profile, Retain Device Identity; see the README). "
                   "DICOM output only.")
@decoder_option
@salt_option
@_jobs_option
def harmonize_cmd(inputs, ref, out, fmt, only_energy, energy_table, orient_left, voi,
                  keep_suspect, keep_identity, decoder, salt, jobs):
    """Remove burned-in text and CDF-match DICOMs to a low-energy reference.

    Foreground-only matching (LUMINA, Eq. 7): background stays exactly 0. Which images are
    matched is decided from metadata only (vendor/model -> energy class). Input files are
    never modified. Derived DICOMs are de-identified (PS3.15 Basic Profile with Retain
    Device Identity; salted pseudonyms and UIDs) unless --keep-identity. Outputs mirror the inputs' paths below their common folder; if two
    inputs would still map to one output, nothing is written and both are named. Writes
    OUT/harmonize_log.jsonl (one row per input: status, QC fields, or the reject kind and
    message); the summary counts rejects by reason; exit 1 if any file was rejected.
    """
    from ..runtime import start_up, started

    start_up()  # no garbage collection until the kernels are loaded (resumed below)
    try:
        _harmonize(inputs, ref, out, fmt, only_energy, energy_table, orient_left, voi,
                   keep_suspect, keep_identity, decoder, salt, jobs)
    finally:
        started()


def _harmonize(inputs, ref, out, fmt, only_energy, energy_table, orient_left, voi,
               keep_suspect, keep_identity, decoder, salt, jobs) -> None:
    """The body of :func:`harmonize_cmd`."""
    from ..io.dicom import iter_dicom_paths
    from ..errors import MammoprepError
    from ..identity import resolve_salt
    from ..pipeline import PrepConfig
    from ..harmonise.reference import load_reference

    # one file named twice (e.g. a folder and a file inside it, spelt differently) is one input
    files = list(_unique(iter_dicom_paths(inputs)))
    if not files:
        raise click.UsageError("no DICOM files found")
    suffix = ".png" if fmt == "png" else ".dcm"
    root = _common_root(list(inputs))
    dests = [_mirror(f, root, out, suffix) for f in files]
    clashes = _collisions([(f, d) for f, d in zip(files, dests)])
    if clashes:
        lines = "\n".join(f"  {src1} and {src2} -> {dest}" for dest, src1, src2 in clashes)
        raise click.UsageError(f"{len(clashes)} output path(s) would be written twice; nothing "
                               f"was written:\n{lines}\nrename one of each pair or harmonise "
                               "them in separate runs")
    inputs_abs = {os.path.abspath(f) for f in files}
    for dest in dests:
        if os.path.abspath(dest) in inputs_abs:
            raise click.UsageError(f"output {dest} would overwrite an input; choose another -o")
    # one run per output folder: a second one fails at once (released at exit, even kill -9)
    import contextlib

    from ..atomic import output_lock

    lock = contextlib.ExitStack()
    try:
        lock.enter_context(output_lock(out, "harmonize"))
    except MammoprepError as err:
        raise click.ClickException(str(err))
    click.get_current_context().call_on_close(lock.close)
    n_jobs = min(jobs or auto_jobs(), len(files))
    if n_jobs == 1:  # the kernels run in this process
        from ..runtime import prepare_process

        prepare_process()
    ref_path = Path(ref)
    if ref_path.suffix.lower() != ".npz":  # build once here, not in every worker
        try:
            built = load_reference(ref_path, keep_suspect=keep_suspect, salt=salt,
                                   energy_table=energy_table)
        except MammoprepError as err:
            raise click.ClickException(str(err))
        out.mkdir(parents=True, exist_ok=True)
        ref_path = out / "reference.npz"
        built.save(ref_path)
    cfg = PrepConfig(reference=str(ref_path.resolve()), only_energy=only_energy,
                     energy_table=energy_table, voi=voi, decoder=decoder,
                     orient_left=orient_left, keep_suspect=keep_suspect)
    try:
        _prepared(cfg)  # fail fast on a bad reference or energy table
    except MammoprepError as err:
        raise click.ClickException(str(err))
    salt_b = resolve_salt(salt)
    jobs_list = [(str(f), str(d), fmt, cfg, salt_b, keep_identity) for f, d in zip(files, dests)]
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    from ..atomic import atomic_write, remove_orphaned_temporaries

    out.mkdir(parents=True, exist_ok=True)
    remove_orphaned_temporaries(out)  # left by a run killed mid-write
    rows = []
    pool = None
    if n_jobs > 1:  # one pool for the whole run, workers warmed before their first file
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from ..runtime import started

        started()  # this process loads no kernels
        pool = ProcessPoolExecutor(n_jobs, mp_context=mp.get_context(start_method()),
                                   initializer=_worker_start, initargs=(cfg, threads))
        size = batch_size(len(jobs_list), n_jobs)
        # every batch is submitted here, which starts the workers: before the progress bar's
        # monitor thread exists, so that a forked worker inherits no other thread
        results = pool.map(_harmonize_batch, [jobs_list[i:i + size]
                                              for i in range(0, len(jobs_list), size)])
    bar = progress_bar(len(files), "harmonize", "img")  # after the workers have started
    if pool is not None:
        with pool:
            for got in results:
                rows.extend(got)
                bar.update(len(got))
    else:
        rows = _harmonize_serial(jobs_list, bar.update)
    bar.close()
    unwritten = [r for r in rows if r.get("kind") == "write_failed"]
    try:
        atomic_write(out / "harmonize_log.jsonl", "".join(
            json.dumps(row, default=_jsonable) + "\n" for row in rows).encode())
    except MammoprepError as err:
        unwritten.append({"error": str(err)})
    if unwritten:  # a full disk or no permission: one error, not one per file
        raise click.ClickException(f"{unwritten[0]['error']} ({len(unwritten)} output(s) not "
                                   "written)")
    failed = [r for r in rows if r["status"] != "ok"]
    for r in failed:
        click.echo(f"ERROR ({r['kind']}) {r['error']}", err=True)
    ok = [r for r in rows if r["status"] == "ok"]
    energies: dict[str, int] = {}
    for r in ok:
        energies[r["energy"]] = energies.get(r["energy"], 0) + 1
    reasons: dict[str, int] = {}
    for r in failed:
        reasons[r["kind"]] = reasons.get(r["kind"], 0) + 1
    suspect_kept = sum(1 for r in ok if r.get("qc") == "suspect")
    click.echo(f"{len(ok)} written to {out} ({sum(r['harmonized'] for r in ok)} harmonised, "
               f"energy classes {json.dumps(energies, sort_keys=True)}"
               + (f", {suspect_kept} kept with qc=suspect" if suspect_kept else "")
               + f"), {len(failed)} failed"
               + (f" ({_reasons(reasons)})" if failed else ""))
    if energies.get("unknown"):
        click.echo(f"note: {energies['unknown']} image(s) of unknown energy class (no "
                   "(0008,0070) Manufacturer, or a vendor not in the energy table); pass "
                   "--energy-table (manufacturer/model rules, or one row per image file) "
                   "to classify them", err=True)
    sys.exit(1 if failed else 0)


@click.command("preview")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ref", "ref", required=True, metavar="REF", help="Reference (.npz, folder, file).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="PNG to write.")
@decoder_option
def preview_cmd(file, ref, out, decoder):
    """Before/after images side by side with their foreground histograms and the reference's."""
    from ..errors import MammoprepError, UnexpectedError
    from ..harmonise.preview import render_preview

    try:
        render_preview(file, ref, out, decoder=decoder)
    except MammoprepError as err:
        raise click.ClickException(str(err))
    except Exception as exc:  # noqa: BLE001 - no traceback from user input
        raise click.ClickException(str(UnexpectedError.wrap(file, exc, "preview")))
    click.echo(f"wrote {out}")
