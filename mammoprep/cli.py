"""`mammoprep` command line. Commands live in :mod:`mammoprep.commands` and are imported
lazily, so ``mammoprep --help`` and each command start fast (no torch, no unused codecs)."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

import click

# command name -> "module:attribute"; each module holds one thin click command.
COMMANDS: dict[str, str] = {
    "inspect": "mammoprep.commands.inspect:inspect_cmd",
    "synth": "mammoprep.commands.synth:synth_cmd",
    "reference": "mammoprep.commands.harmonize:reference_cmd",
    "harmonize": "mammoprep.commands.harmonize:harmonize_cmd",
    "preview": "mammoprep.commands.harmonize:preview_cmd",
    "shard": "mammoprep.commands.shard:shard_cmd",
    "verify": "mammoprep.commands.shard:verify_cmd",
    "qc": "mammoprep.commands.qc:qc_cmd",
}

_HELP = {
    "inspect": "Decode DICOMs and print metadata, decode status and pixel statistics.",
    "synth": "Write a deterministic synthetic multi-vendor cohort (LUMINA layout).",
    "reference": "Build a low-energy harmonisation reference (.npz) from DICOMs.",
    "harmonize": "Remove burned-in text and CDF-match DICOMs to a reference.",
    "preview": "Before/after PNG of harmonisation with histograms.",
    "shard": "Write WebDataset shards and Parquet manifests.",
    "verify": "Check shards against their manifests.",
    "qc": "Contact sheet of the breast segmentation (suspect images first).",
}


def _exit_now(code: object) -> None:
    """``sys.exit(code)`` semantics (None = 0, an int, or a message printed to stderr = 1),
    after flushing logging and the standard streams, without interpreter teardown."""
    import os

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    logging.shutdown()
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left before our last line: say so (once), exit 1
        if not status:
            print("mammoprep: the program reading standard output closed the pipe before "
                  "the output ended", file=sys.stderr)
            status = 1
    except (OSError, ValueError):  # closed: nothing more to say
        pass
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(status & 0xFF if status >= 0 else 1)


def _reader_gone(fd: int) -> bool:
    """True if ``fd`` is a pipe whose reading end has been closed (poll reports POLLERR)."""
    import select

    try:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _broken_pipe(ctx: click.Context) -> click.ClickException:
    """The message for a ``BrokenPipeError`` out of a command: the program reading our
    standard output went away (``mammoprep inspect ... | head``), or a pipe inside the run
    (a pool worker's) broke."""
    name = f"mammoprep {ctx.invoked_subcommand or ctx.info_name}"
    try:
        gone = _reader_gone(sys.__stdout__.fileno())
    except (OSError, ValueError, AttributeError):
        gone = False
    if gone:
        return click.ClickException(
            f"`{name}` stopped: the program reading its standard output closed the pipe; "
            "outputs finished so far are kept (rerun to resume, or read the whole output)")
    return click.ClickException(
        f"`{name}` stopped: a pipe inside the run broke (a worker process died?); outputs "
        "finished so far are kept: rerun to resume, with -v for details")


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command runs."""

    def invoke(self, ctx: click.Context):
        """Run the command; a broken pipe becomes a message saying which pipe, not click's
        silent exit 1."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise _broken_pipe(ctx) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def main(self, args=None, *rest, standalone_mode: bool = True, **kwargs):
        """As a console script (``args`` None, standalone mode): one BLAS thread unless the
        user chose otherwise (:func:`mammoprep.runtime.one_blas_thread`); once the command has
        finished, its files are closed and its output flushed, leave with ``os._exit``,
        skipping the interpreter's teardown (0.11-0.14 s of freeing Numba's, pydicom's and
        NumPy's objects after a `harmonize` run: benchmarks/startup_io.py). Called
        with ``args`` (tests, scripts) it behaves as click's own."""
        if args is not None or not standalone_mode:
            return super().main(args, *rest, standalone_mode=standalone_mode, **kwargs)
        from .runtime import one_blas_thread

        one_blas_thread()  # mammoprep does no linear algebra (see mammoprep.runtime)
        try:
            super().main(args, *rest, standalone_mode=standalone_mode, **kwargs)
            code: object = 0
        except SystemExit as exc:
            code = exc.code
        _exit_now(code)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def setup_logging(verbose: int, quiet: bool) -> None:
    """Messages through :mod:`logging` on stderr: warnings by default, ``-v`` info,
    ``-vv`` debug, ``-q`` errors only. Python warnings (pydicom's) are routed to the log,
    identifiers scrubbed from library messages, each distinct one shown once per run,
    worker processes included (:mod:`mammoprep.logs`)."""
    from . import logs

    logs.setup(logging.ERROR if quiet else logging.DEBUG if verbose > 1 else
               logging.INFO if verbose else logging.WARNING)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mammoprep")
@click.option("-v", "--verbose", count=True,
              help="More messages on stderr (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only on stderr (no warnings).")
@click.option("--progress/--no-progress", "progress", default=None,
              help="Progress bars on stderr. Default: only when stderr is a terminal.")
@click.option("--max-image-bytes", "max_image_bytes", metavar="SIZE", default=None,
              envvar="MAMMOPREP_MAX_IMAGE_BYTES", show_envvar=True,
              callback=lambda ctx, param, value: _max_image_bytes(value),
              help="Memory cap on one image: a file whose header declares Rows x Columns x "
                   "Frames x Samples x bytes per sample (at least 2) above it is a "
                   "too_large reject, checked before any pixel is read. Default 256M (4.7x "
                   "the largest mammogram); e.g. 1G. Memory per worker grows with it.")
def main(verbose: int, quiet: bool, progress: bool | None,
         max_image_bytes: int | None) -> None:
    """Turn DICOM mammograms from any vendor into training-ready data.

    \b
    Typical flow (runs as printed, in an empty folder):
      mammoprep synth cohort/ --patients 4 --size 256x208 --seed 0
      mammoprep inspect cohort/
      mammoprep reference cohort/ -o ref.npz --energy low
      mammoprep harmonize --ref ref.npz cohort/ -o harmonised/
      mammoprep shard cohort/ -o shards/ --labels lumina:cohort/ --ref ref.npz --size 256
      mammoprep verify shards/
    """
    from . import options

    options.PROGRESS = progress
    setup_logging(verbose, quiet)


def _max_image_bytes(value: str | None) -> int | None:
    """Validate ``--max-image-bytes`` / $MAMMOPREP_MAX_IMAGE_BYTES and put the bytes in the
    environment, where every reader (worker processes included) finds it
    (:func:`mammoprep.io.limits.max_image_bytes`)."""
    import os

    from .io import limits

    if value is None:
        return None
    try:
        size = limits.parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-image-bytes / "
                                 f"${limits.ENV_MAX_IMAGE_BYTES}") from None
    os.environ[limits.ENV_MAX_IMAGE_BYTES] = str(size)
    return size


if __name__ == "__main__":  # pragma: no cover
    main()
