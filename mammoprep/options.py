"""Click options shared by several commands (one definition each)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import click


def _decoder_choices() -> list[str]:
    from . import decoders

    return decoders.names()


decoder_option = click.option(
    "--decoder", default=None, metavar="NAME",
    help="Preferred pixel decoder plug-in (native, libjpeg-turbo, charls, openjph, pydicom, "
         "pillow-openjpeg, nvimgcodec). Default: the fastest installed one; all give "
         "identical pixels.",
    callback=lambda ctx, param, value: _check_decoder(value))

salt_option = click.option(
    "--salt", envvar="MAMMOPREP_SALT", default=None, show_envvar=True,
    help="Pseudonymisation salt for patient/study/UID hashes (at least 16 characters; keep "
         "it secret). Default: a random per-user salt kept in ~/.config/mammoprep/salt.",
    callback=lambda ctx, param, value: _check_salt(value))

keep_suspect_option = click.option(
    "--keep-suspect", is_flag=True,
    help="Keep images whose breast segmentation fails the quality gate (flagged qc=suspect) "
         "instead of leaving them out with reason segmentation_suspect.")

#: --help of every command's --energy-table (reference, harmonize, shard).
ENERGY_TABLE_HELP = (
    "Your own energy-class CSV (default: manifests/energy_classes.csv): manufacturer/model "
    "regular expressions (columns manufacturer,model,energy), or one row per image file "
    "for archives without (0008,0070) Manufacturer (columns image,energy; image = file name "
    "without .dcm, or PARENT/NAME such as RSNA's patient_id/image_id; files it does not "
    "name are classified by the shipped table). README, 'Energy classes'.")

jobs_option = click.option(
    "-j", "--jobs", type=click.IntRange(min=0), default=0, show_default=True,
    help="Worker processes (0 = all cores).")


scheduler_option = click.option(
    "--scheduler", default=None, metavar="ADDRESS",
    help="Run the per-file work on the Dask cluster whose scheduler is at ADDRESS (e.g. "
         "tcp://head:8786) instead of local processes (-j is then not used). Inputs and "
         "outputs must be on storage every worker sees; the salt travels with the work. "
         "README, 'Running on a cluster'.")


def batch_runner(scheduler: str | None, workers: int = 1, **local: Any):
    """The :class:`mammoprep.batch.Runner` of a command: on the Dask cluster at
    ``scheduler`` (:meth:`~mammoprep.batch.Runner.dask`), else ``Runner(workers,
    **local)``. A missing Dask or an unreachable scheduler is one usage error."""
    from .batch import Runner

    if not scheduler:
        return Runner(workers, **local)
    try:
        return Runner.dask(scheduler)
    except ImportError:
        raise click.UsageError("--scheduler needs Dask: pip install 'mammoprep[dask]'")
    except (OSError, ValueError, TypeError) as exc:  # refused, timed out, bad address
        raise click.UsageError(
            f"cannot reach the Dask scheduler at {scheduler!r} ({type(exc).__name__}: "
            f"{exc}); start one with `dask scheduler` and pass the address it prints")


def worker_paths(paths: Iterable[Path], scheduler: str | None) -> list[Path]:
    """``paths`` as the workers must see them: absolute on a cluster (``scheduler``; a
    worker runs in a folder of its own, so a relative path would name another file there),
    as given otherwise. Symbolic links are kept, not resolved."""
    if not scheduler:
        return list(paths)
    return [Path(os.path.abspath(p)) for p in paths]


progress_option = click.option(
    "--progress/--no-progress", "progress", default=None,
    help="Show progress bars on stderr. Default: only when stderr is a terminal.")


#: ``mammoprep --progress/--no-progress`` (the group option); None = bars on a terminal only
PROGRESS: bool | None = None


def bar_disabled(progress: bool | None = None) -> bool | None:
    """tqdm's ``disable`` for a command's ``--progress/--no-progress`` value, else the
    group's (:data:`PROGRESS`); None is tqdm's own rule: bars only when stderr is a
    terminal (never in logs or pipes)."""
    chosen = PROGRESS if progress is None else progress
    return None if chosen is None else not chosen


class _NoBar:
    """What :func:`progress_bar` returns when no bar is shown: the calls, doing nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, unit: str, progress: bool | None = None):
    """A tqdm bar on stderr, or a do-nothing stand-in where :func:`bar_disabled` (or, by
    default, a stderr that is no terminal) says there is none: then tqdm, whose import
    reads its package metadata (about 20 ms), is never imported."""
    import sys

    disable = bar_disabled(progress)
    if disable is None:
        disable = not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    if disable:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)


def _check_salt(value: str | None) -> str | None:
    """Refuse an empty or short salt (or salt file) before any work starts."""
    from .identity import SaltError, resolve_salt

    try:
        resolve_salt(value)
    except SaltError as err:
        raise click.BadParameter(str(err), param_hint="--salt / $MAMMOPREP_SALT")
    return value


def _check_decoder(value: str | None) -> str | None:
    if value is not None and value not in _decoder_choices():
        raise click.BadParameter(f"unknown decoder {value!r}; choose from "
                                 f"{', '.join(_decoder_choices())}", param_hint="--decoder")
    return value
