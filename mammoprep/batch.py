"""The one batch runner: a function over many jobs, in this process, on a local pool of
threads or processes, or on any ``concurrent.futures`` executor (a Dask client's).

``harmonize``, ``reference``, ``shard`` and ``qc`` all run their per-file (or per-shard)
work through a :class:`Runner`:

    with Runner(workers=4, initializer=numba_worker_init) as runner:
        for row in runner.map(work, [Job(src=p, salt=salt) for p in paths], progress=bar.update):
            ...

- jobs are typed (:class:`Job`, or any frozen dataclass such as a shard task), never
  positional tuples;
- results come back in job order, whatever order the workers finish in;
- ``progress(n)`` is called in this process as results arrive (n results at a time);
- a job's failure is the job's result, never the end of the run: :func:`as_reject` turns
  any exception into a typed :class:`~mammoprep.errors.MammoprepError` naming the file;
- local processes start with ``spawn`` (or ``fork`` where :func:`start_method` says it is
  safe), with a bounded number of Numba threads per worker (:func:`numba_worker_init`).

Dask is imported only by :meth:`Runner.dask`.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import sys
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from .errors import MammoprepError, UnexpectedError

J = TypeVar("J")
R = TypeVar("R")


@dataclass(frozen=True)
class Job:
    """One input file's work. ``src``: the input; ``dest``: its output ('' when the work
    writes none); ``fmt``: output format (``dicom`` / ``png``); ``cfg``: the
    :class:`~mammoprep.pipeline.PrepConfig`; ``salt``: pseudonym salt; ``keep_identity``:
    derived DICOMs keep the source identifiers; ``decoder``: pixel decoder name."""

    src: str
    dest: str = ""
    fmt: str = ""
    cfg: Any = None
    salt: bytes | None = None
    keep_identity: bool = False
    decoder: str | None = None


def as_reject(exc: BaseException, src, during: str) -> MammoprepError:
    """The typed error of a job that failed: a :class:`~mammoprep.errors.MammoprepError`
    as it is, anything else wrapped as :class:`~mammoprep.errors.UnexpectedError` naming
    ``src`` and what was being done (``during``)."""
    if isinstance(exc, MammoprepError):
        return exc
    return UnexpectedError.wrap(src, exc, during)


def auto_jobs(cores: int | None = None) -> int:
    """``-j 0``: one worker per core (1 = no pool, in this process)."""
    return max(1, cores or os.cpu_count() or 1)


#: At most this many jobs per batch sent to a worker: large enough that a batch's pipeline
#: start and drain (one unoverlapped read, the last writes) stay small, small enough for the
#: progress bar and for the workers to finish together.
MAX_BATCH = 32


def batch_size(files: int, workers: int, most: int = MAX_BATCH) -> int:
    """Jobs per batch: the fewest equal rounds of one batch per worker with batches of at
    most ``most`` jobs (24 files on 2 workers: 12; 96: 24; a million: 32)."""
    if files <= 0 or workers <= 0:
        return 1
    rounds = -(-files // (workers * most))
    return max(1, -(-files // (workers * rounds)))


def start_method() -> str:
    """How a pool starts its workers when asked for the fastest safe way: ``fork`` on Linux
    while this process has no other thread and has not loaded Numba (a forked worker then
    skips the interpreter start and the imports it would repeat: 0.19 s of a 24-image run on
    2 cores, benchmarks/RESULTS.md; GNU OpenMP, which Numba's kernels use, refuses a fork
    once it has run); ``spawn`` otherwise (other platforms, or library use in a busy
    process)."""
    if (sys.platform.startswith("linux") and threading.active_count() == 1
            and "numba" not in sys.modules):
        return "fork"
    return "spawn"


def watch_parent(parent: int, every: float = 0.2) -> None:
    """In a pool worker: a daemon thread that ends this process once ``parent`` is gone
    (``kill -9`` of the command: the worker is handed to another parent). Without it a
    worker would finish its batch writing into an output folder no longer locked, then
    wait for work forever. A file it was writing stays a temporary, which the next run
    removes (:func:`mammoprep.atomic.sweep_temporaries`)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="mammoprep-parent-watch", daemon=True).start()


#: prctl(2) option: the signal this process gets when its parent (the thread that made it)
#: ends (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def kill_with_parent() -> bool:
    """Linux: ask the kernel to SIGKILL this process the moment its parent ends
    (``prctl(PR_SET_PDEATHSIG)``), with no thread and no polling. The "parent" is the
    thread that started this process, so only for workers started by a main thread
    (:class:`Runner` checks). True if the kernel accepted it; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no prctl in this C library
        return False


def numba_worker_init() -> None:
    """Pool initializer: one Numba thread per worker process. The environment variable only
    counts before Numba is imported: changing it afterwards makes Numba's first compilation
    in this process fail ("Cannot set NUMBA_NUM_THREADS to a different value once the
    threads have been launched"), so it is only set when Numba is not loaded yet;
    ``set_num_threads`` caps the threads either way."""
    if "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    try:
        from .runtime import prepare_process

        prepare_process(1)  # also: image-sized blocks reused, no BLAS probe at start-up
    except Exception:  # noqa: BLE001
        pass


def process_worker_start(threads: int = 1, warm: str | None = None, *args: Any) -> None:
    """Pool initializer of a command that pushes full-size images through the kernels:
    freed images kept for reuse (:func:`mammoprep.runtime.keep_freed_images`, before any
    other thread of this worker starts, so ``warm`` is imported only afterwards),
    ``threads`` Numba threads (set before
    Numba is imported), garbage collection paused through start-up, then ``warm``
    (``"module:function"``, called with ``args``: load the reference, warm the kernels)
    before the first job. A failing ``warm`` is left to the jobs to report."""
    from .runtime import keep_freed_images, prepare_process, start_up, started

    keep_freed_images()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))
    start_up()
    try:
        prepare_process(threads)
    except Exception:  # noqa: BLE001
        pass
    if warm:
        try:
            module, name = warm.split(":")
            getattr(importlib.import_module(module), name)(*args)
        except Exception:  # noqa: BLE001 - e.g. a bad reference: reported per file
            pass
    started()


def _start_worker(parent: int, signal_on_death: bool, log_args: tuple,
                  init: Callable[..., None] | None, args: tuple) -> None:
    """The initializer of every local worker process of a :class:`Runner`. The worker
    dies with ``parent`` (the command's process, even after ``kill -9``): the kernel kills
    it at once where it can (:func:`kill_with_parent`, when ``signal_on_death``), a worker
    whose parent is already gone leaves now, and :func:`watch_parent` covers the rest
    (other platforms, workers started by another thread). Its log records and warnings go
    to the parent (:func:`mammoprep.logs.worker_logging`). Then ``init(*args)``; the
    watchdog's thread starts after it, as ``init`` may need to run before any other
    thread (:func:`mammoprep.runtime.keep_freed_images`)."""
    from .logs import worker_logging

    if signal_on_death:
        kill_with_parent()
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)
    try:
        worker_logging(*log_args)
        if init is not None:
            init(*args)
    finally:
        watch_parent(parent)


class Runner:
    """Where jobs run. ``workers`` <= 1 and no ``executor``: in this process, one after
    the other. ``workers`` > 1: a local pool of processes (``start``: ``spawn``, ``fork``
    or ``auto`` for :func:`start_method`; ``initializer(*initargs)`` runs once in each)
    or, with ``threads=True``, of threads. ``executor``: any ``concurrent.futures``
    executor (e.g. ``distributed.Client.get_executor()``), shut down with the runner
    only if ``own``. The local pool is made on first use (or by :meth:`start`)."""

    def __init__(self, workers: int = 1, *, executor: Executor | None = None,
                 threads: bool = False, start: str = "spawn",
                 initializer: Callable[..., None] | None = None, initargs: tuple = (),
                 own: bool = True, on_close: Callable[[], None] | None = None) -> None:
        self.workers = max(1, workers)
        self._executor = executor
        self._local = executor is None and self.workers > 1 and not threads
        self._own = own if executor is not None else True
        self._threads = threads
        self._start = start
        self._init = (initializer, initargs)
        self._on_close = on_close
        self._listener = None  # the workers' log records to this process's handler

    @classmethod
    def dask(cls, scheduler: str) -> "Runner":
        """Jobs on a Dask cluster (``scheduler``: its address), each job a task of its own
        (never merged with an identical one: jobs write files). :attr:`workers` is the
        cluster's thread count when it connects (what batch sizes are cut for).
        ImportError without ``distributed``; OSError when the scheduler cannot be reached.
        The client is closed with the runner. Jobs, with everything they carry (the salt
        included), are pickled to the workers."""
        from distributed import Client

        client = Client(scheduler)
        threads = sum(client.nthreads().values())
        return cls(max(1, threads), executor=client.get_executor(pure=False),
                   on_close=client.close)

    @classmethod
    def of(cls, executor: "Runner | Executor | None") -> "Runner":
        """``executor`` as a runner: a runner as it is, an executor used (not shut down),
        None: this process."""
        if isinstance(executor, Runner):
            return executor
        return cls(executor=executor, own=False)

    @property
    def in_process(self) -> bool:
        """Whether jobs run here, one by one as :meth:`map`'s results are taken (so a job
        may depend on what the caller did with the results before it)."""
        return self._executor is None and self.workers <= 1

    @property
    def local_pool(self) -> bool:
        """Whether jobs go to this runner's own pool of processes (worth chunking)."""
        return self._local

    def start(self) -> "Runner":
        """Make the local pool now (its workers start with the first submitted job)."""
        if self._executor is None and self.workers > 1:
            init, args = self._init
            if self._threads:
                self._executor = ThreadPoolExecutor(self.workers, initializer=init,
                                                    initargs=args)
            else:
                from . import logs

                method = start_method() if self._start == "auto" else self._start
                ctx = mp.get_context(method)
                log_args, self._listener = logs.forward_workers(ctx)
                # workers die with this process (the kernel's signal only where the thread
                # that starts them, this one, lives as long as the process)
                main = threading.current_thread() is threading.main_thread()
                self._executor = ProcessPoolExecutor(
                    self.workers, mp_context=ctx, initializer=_start_worker,
                    initargs=(os.getpid(), main, log_args, init, args))
        return self

    def map(self, fn: Callable[[J], R], jobs: Iterable[J], *, chunksize: int = 1,
            progress: Callable[[int], None] | None = None) -> Iterator[R]:
        """``fn(job)`` of every job, in job order. Every job is submitted before this
        returns (so a process pool's workers start now); ``progress(1)`` per result."""
        self.start()
        if self._executor is None:
            results = map(fn, jobs)
        elif chunksize > 1:
            results = self._executor.map(fn, jobs, chunksize=chunksize)
        else:
            results = self._executor.map(fn, jobs)
        return _counted(_worker_losses(results), progress, lambda r: 1)

    def map_batches(self, fn: Callable[[list[J]], list[R]], jobs: Sequence[J], size: int,
                    progress: Callable[[int], None] | None = None) -> Iterator[list[R]]:
        """``fn(batch)`` (a list of results per list of jobs) of consecutive batches of
        ``size`` jobs, in order; ``progress(len(results))`` per batch."""
        batches = [list(jobs[i:i + size]) for i in range(0, len(jobs), size)]
        return _counted(self.map(fn, batches), progress, len)

    def close(self) -> None:
        if self._executor is not None and self._own:
            self._executor.shutdown(wait=True)
        if self._listener is not None:  # after the workers: their last records shown
            self._listener.stop()
            queue = self._listener.queue
            queue.close()  # ends the thread that fed the listener's stop sentinel
            queue.join_thread()
            self._listener = self._executor = None
            # the workers' queue is no longer referenced once they are reaped: its
            # semaphores are freed now, not reported as leaked by a process that exits
            # with os._exit (the CLI)
            mp.active_children()

        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WorkerLostError(MammoprepError):
    """A worker process died (killed, out of memory) and took its jobs with it."""

    kind = "worker_lost"


#: What an executor raises when a worker process dies under a job: a local pool, Dask.
_LOST = ("BrokenProcessPool", "KilledWorker")


def _worker_losses(results: Iterable[R]) -> Iterator[R]:
    """``results``, with the death of a worker (:data:`_LOST`) as one
    :class:`WorkerLostError` that says what to do."""
    try:
        yield from results
    except Exception as exc:
        if type(exc).__name__ not in _LOST:
            raise
        raise WorkerLostError(
            None, "a worker process died before it finished its work",
            tag="worker", value=f"{type(exc).__name__}: {exc}",
            hint="the usual cause is memory (the system's out-of-memory killer, or a Dask "
                 "worker's memory limit; Dask first retries the task on other workers, up "
                 "to distributed.scheduler.allowed-failures times): check the logs and "
                 "limits, then rerun the same command: finished outputs are kept and the "
                 "rerun resumes") from None


def _counted(results: Iterable[R], progress: Callable[[int], None] | None,
             count: Callable[[R], int]) -> Iterator[R]:
    for r in results:
        if progress:
            progress(count(r))
        yield r
