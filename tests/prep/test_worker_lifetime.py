"""After ``kill -9`` of a command: its pool workers and multiprocessing's resource tracker
end with it, and the next run removes every temporary file the killed run left in OUT
(whatever process id its name carries)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mammoprep.cli import main

COHORT = dict(patients=8, seed=3, size=(256, 208))  # the `cohort` fixture (conftest.py)


def _children(pid: int) -> dict[int, str]:
    """{child pid: command line} of the live, non-zombie children of ``pid``."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
            fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, ...
            if int(fields[1]) != pid or fields[0] == "Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                found[int(entry)] = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):  # gone meanwhile
            continue
    return found


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        return stat[stat.rindex(")") + 2:].split()[0] != "Z"
    except (OSError, ValueError):
        return False


def test_kill_9_of_shard_takes_its_workers_and_resource_tracker_along(cohort, tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mammoprep.cli", "--no-progress", "shard", str(cohort),
           "-o", str(tmp_path / "out"), "--labels", f"lumina:{cohort}", "--size", "64",
           "--samples-per-shard", "2", "-j", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    try:
        deadline = time.monotonic() + 60
        workers: dict[int, str] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            kids = _children(proc.pid)
            workers = {p: c for p, c in kids.items() if "resource_tracker" not in c}
            if len(workers) >= 2:
                break
            time.sleep(0.02)
        assert len(workers) >= 2, f"the pool's workers never showed up ({proc.poll()=})"
        tracker = [p for p, c in _children(proc.pid).items() if "resource_tracker" in c]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = list(workers) + tracker
    deadline = time.monotonic() + 20  # generous: they go at once where the kernel kills them
    while any(map(_running, left)) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [(p, workers.get(p, "resource tracker")) for p in left if _running(p)]
    for p, _ in alive:  # do not leave them behind on a failure either
        os.kill(p, signal.SIGKILL)
    assert not alive, f"outlived `shard` after kill -9: {alive}"


def test_harmonize_rerun_removes_stale_temporaries_whatever_their_process_id(cohort,
                                                                             tmp_path):
    # a killed run's temporary files carry its pid; pids are reused (here: ones alive now),
    # and a worker on another host has pids of its own: under the lock all are stale
    ref = tmp_path / "ref.npz"
    r = CliRunner().invoke(main, ["reference", str(cohort), "-o", str(ref)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    first = sorted(cohort.rglob("*.dcm"))[0].relative_to(cohort)
    planted = [out / first.parent / f".{first.name}.{os.getpid()}.tmp",
               out / first.parent / f".other.dcm.{os.getppid()}.tmp",
               out / ".harmonize_log.jsonl.1.tmp"]
    for p in planted:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half a file")
    keep = out / "notes.tmp"  # not of our naming: not ours to delete
    keep.write_text("mine")
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(cohort), "-o", str(out),
                                  "-j", "1"])
    assert r.exit_code == 0, r.output
    assert [p for p in planted if p.exists()] == []
    assert keep.read_text() == "mine"
    assert sorted(p.relative_to(out) for p in out.rglob("*.dcm")) == \
        sorted(p.relative_to(cohort) for p in cohort.rglob("*.dcm"))
