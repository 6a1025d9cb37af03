"""Messages on stderr through :mod:`logging`: ours as written; the libraries' (pydicom's log
records and Python warnings) with identifiers scrubbed and each distinct one shown once per
run, whichever process of the run raised it.

pydicom quotes the values it warns about ("Invalid value for VR UI: '1.2.03.4...'"): a
non-conformant SOP Instance UID or Patient ID would reach the terminal and every log file
kept of it. :func:`scrub` replaces quoted values and UID-like numbers by placeholders, so
"the same warning for another file" is one message. Worker processes of a local pool send
their records to the parent (:func:`forward_workers` in the parent,
:func:`worker_logging` in each worker), whose handler shows each message once.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
import warnings

#: A dotted number with four or more parts (a DICOM UID, possibly non-conformant).
_UID = re.compile(r"(?<![\w.])\d+(?:\.\w+){3,}(?![\w])")
#: A quoted value: what pydicom warns about, as found in the file.
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
#: What a scrubbed value becomes.
PLACEHOLDER = "<value>"

FORMAT = "%(levelname)s: %(name)s: %(message)s"


def scrub(text: str) -> str:
    """``text`` with quoted values and UID-like numbers replaced by :data:`PLACEHOLDER`
    (``"Invalid value for VR UI: '1.2.3.4'"`` -> ``"Invalid value for VR UI: '<value>'"``)."""
    text = _QUOTED.sub(f"'{PLACEHOLDER}'", text)
    return _UID.sub(PLACEHOLDER, text)


def _ours(record: logging.LogRecord) -> bool:
    return record.name == "mammoprep" or record.name.startswith("mammoprep.")


class LibraryMessages(logging.Filter):
    """logging filter: a library's message (pydicom's logger, a Python warning) is scrubbed
    (:func:`scrub`) and passes once per distinct scrubbed text; pydicom's ``warn_and_log``
    sends each one both as a log record and a warning, which count as one. ``mammoprep``'s
    own messages always pass, as written."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if _ours(record):
            return True
        text = record.getMessage().split("\n", 1)[0]
        if record.name == "py.warnings":  # "file:line: UserWarning: text" -> "text"
            text = text.split("Warning: ", 1)[-1]
        text = scrub(text)
        record.msg, record.args, record.exc_info, record.exc_text = text, (), None, None
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (click's test runner swaps it
    between invocations)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


_HANDLER: logging.Handler | None = None


def setup(level: int) -> logging.Handler:
    """The run's one stderr handler at ``level`` on the root logger (replacing the one of
    an earlier call in this process), library messages through :class:`LibraryMessages`,
    Python warnings routed to the log (all of them at WARNING or below: the filter shows
    each once; none above, as for ``-q``)."""
    global _HANDLER
    root = logging.getLogger()
    if _HANDLER is not None:  # called again in one process (tests): replace, not add
        root.removeHandler(_HANDLER)
    _HANDLER = StderrHandler()
    _HANDLER.setFormatter(logging.Formatter(FORMAT))
    _HANDLER.setLevel(level)
    _HANDLER.addFilter(LibraryMessages())
    root.addHandler(_HANDLER)
    root.setLevel(min(root.level or logging.WARNING, level))
    logging.getLogger("mammoprep").setLevel(level)
    _capture_warnings(level)
    return _HANDLER


def _capture_warnings(level: int) -> None:
    logging.captureWarnings(True)
    warnings.simplefilter("ignore" if level > logging.WARNING else "always")


def forward_workers(ctx) -> tuple[tuple, "logging.handlers.QueueListener | None"]:
    """In the parent, before a local process pool of context ``ctx`` starts: (the
    arguments of :func:`worker_logging` for each worker, the listener to stop when the pool
    is shut down). Without :func:`setup` (library use) the workers log to their own stderr
    through the same filter, and there is no listener."""
    if _HANDLER is None:
        return (None, logging.WARNING), None
    queue = ctx.Queue()
    listener = logging.handlers.QueueListener(queue, _HANDLER, respect_handler_level=True)
    listener.start()
    return (queue, _HANDLER.level), listener


def worker_logging(queue, level: int) -> None:
    """In a pool worker: its log records and Python warnings go to ``queue`` (the parent
    shows them, each library message once per run), scrubbed and deduplicated here first;
    with no queue, to this process's stderr, scrubbed and once each. A forked worker's
    inherited handlers are replaced."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler
    if queue is not None:
        handler = logging.handlers.QueueHandler(queue)
    else:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(level)
    handler.addFilter(LibraryMessages())
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("mammoprep").setLevel(level)
    _capture_warnings(level)
