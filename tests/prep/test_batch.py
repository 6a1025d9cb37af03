"""mammoprep.batch: one runner for every command's per-file work."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mammoprep.batch import Job, Runner, as_reject, batch_size
from mammoprep.errors import MammoprepError, UnexpectedError


def _slow_first(x: int) -> int:
    """Finishes in the reverse order of submission."""
    time.sleep(0.05 * (3 - x))
    return x * 10


def test_results_come_back_in_job_order_with_progress():
    seen: list[int] = []
    with Runner(3, threads=True) as runner:
        assert list(runner.map(_slow_first, [0, 1, 2], progress=seen.append)) == [0, 10, 20]
    assert seen == [1, 1, 1]


def test_in_this_process_is_the_plain_map():
    runner = Runner()
    assert not runner.local_pool
    assert list(runner.map(abs, [-1, 2, -3])) == [1, 2, 3]


def test_process_pool_batches_in_order():
    counted: list[int] = []
    with Runner(2) as runner:  # spawned workers
        assert runner.local_pool
        got = list(runner.map_batches(sorted, [5, 4, 3, 2, 1, 0, 9], 3,
                                      progress=counted.append))
    assert got == [[3, 4, 5], [0, 1, 2], [9]] and counted == [3, 3, 1]


def test_a_foreign_executor_is_used_not_shut_down():
    pool = ThreadPoolExecutor(2)
    with Runner.of(pool) as runner:
        assert not runner.local_pool
        assert list(runner.map(abs, [-4, 5])) == [4, 5]
    assert pool.submit(abs, -1).result() == 1  # still open
    pool.shutdown()


def test_jobs_are_frozen_and_typed():
    job = Job("a.dcm", "out/a.dcm", "png", salt=b"s")
    assert (job.src, job.dest, job.fmt, job.keep_identity) == ("a.dcm", "out/a.dcm", "png",
                                                                  False)
    with pytest.raises(AttributeError):
        job.src = "b.dcm"  # type: ignore[misc]


def test_rejects_are_typed_errors_naming_the_file():
    typed = MammoprepError("a.dcm", "bad")
    assert as_reject(typed, "a.dcm", "x") is typed
    wrapped = as_reject(ZeroDivisionError("boom"), "b.dcm", "harmonisation")
    assert isinstance(wrapped, UnexpectedError)
    assert "b.dcm" in str(wrapped) and "ZeroDivisionError: boom" in str(wrapped)


def test_batch_size_rounds():
    assert [batch_size(24, 2), batch_size(96, 2), batch_size(10**6, 2)] == [12, 24, 32]
    assert batch_size(0, 2) == 1


def _die(x: int) -> int:
    import os

    if x == 1:
        os._exit(3)  # as the out-of-memory killer would end it
    return x


def test_a_worker_that_dies_is_one_typed_error_saying_what_to_do():
    from mammoprep.batch import WorkerLostError

    with Runner(2) as runner, pytest.raises(WorkerLostError) as info:
        list(runner.map(_die, [0, 1, 2, 3]))
    assert info.value.kind == "worker_lost" and "rerun" in str(info.value)
    assert "BrokenProcessPool" in str(info.value)
