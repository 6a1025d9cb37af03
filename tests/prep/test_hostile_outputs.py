"""Outputs in hostile places (issue 25, defects 8 and 10): a reader that closes our standard
output, a full disk under `qc` and `preview` (no partial PNG under its final name), an
impossible output folder, a locked folder naming the run that holds it, and a `harmonize`
rerun whose output folder lies inside its input folder."""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mammoprep.atomic import output_lock
from mammoprep.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small(make_cohort) -> Path:
    return make_cohort(patients=1, seed=3, size=(160, 128))


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> Path:
    from mammoprep.harmonise.match import Reference

    path = tmp_path_factory.mktemp("ref") / "ref.npz"
    Reference.from_histograms([np.ones(4096, np.int64)], bits=12).save(path)
    return path


@contextmanager
def _full_disk(limit: int = 2048):
    """Every file this process writes stops growing at ``limit`` bytes (RLIMIT_FSIZE, with
    SIGXFSZ ignored, so the write fails with EFBIG as a full disk fails with ENOSPC)."""
    old_sig = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_sig)


def test_a_reader_that_closes_stdout_gets_a_message_and_exit_1(small):
    env = {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "mammoprep.cli", "inspect", str(small)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    p.stdout.close()  # `mammoprep inspect ... | head -0`
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 1, err
    assert "closed the pipe" in err and "Traceback" not in err


def test_qc_on_a_full_disk_leaves_no_partial_sheet(small, tmp_path):
    ok = tmp_path / "first" / "qc.png"
    r = CliRunner().invoke(main, ["qc", str(small), "-o", str(ok), "-j", "1"])
    assert ok.stat().st_size > 4096, r.output  # a sheet is larger than the limit below
    out = tmp_path / "full" / "qc.png"
    with _full_disk():
        r = CliRunner().invoke(main, ["qc", str(small), "-o", str(out), "-j", "1"])
    assert r.exit_code == 1
    assert "cannot write" in r.output and str(out) in r.output, r.output
    assert "Traceback" not in r.output and "unexpected" not in r.output
    assert not out.exists() and not list(out.parent.glob(".*.tmp"))


def test_qc_into_an_impossible_folder_fails_before_the_batch(small, tmp_path):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "qc.png"
    r = CliRunner().invoke(main, ["qc", str(small), "-o", str(out), "-j", "1"])
    assert r.exit_code == 1 and "cannot write" in r.output, r.output
    assert "Traceback" not in r.output and "qc sheet" not in r.output


def test_preview_on_a_full_disk_leaves_no_png(small, ref, tmp_path):
    f = sorted(small.rglob("*.dcm"))[0]
    first = tmp_path / "first.png"
    r = CliRunner().invoke(main, ["preview", str(f), "--ref", str(ref), "-o", str(first)])
    assert r.exit_code == 0 and first.stat().st_size > 4096, r.output
    out = tmp_path / "p.png"
    with _full_disk():
        r = CliRunner().invoke(main, ["preview", str(f), "--ref", str(ref), "-o", str(out)])
    assert r.exit_code == 1 and "cannot write" in r.output, r.output
    assert "unexpected" not in r.output
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_a_locked_folder_names_the_command_that_holds_it(small, ref, tmp_path):
    out = tmp_path / "h"
    with output_lock(out, "shard"):
        r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(small), "-o",
                                      str(out), "-j", "1"])
    assert r.exit_code == 1
    assert f"another `mammoprep shard` (pid {os.getpid()})" in r.output, r.output


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.dcm"))}


def test_harmonize_rerun_with_out_inside_in_leaves_its_outputs_out(small, ref, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(small, src)
    out = src / "harmonised"
    args = ["harmonize", "--ref", str(ref), str(src), "-o", str(out), "-j", "1"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    first = _digests(out)
    assert first and len(first) == len(_digests(small))
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "left out" in r.output and "output folder" in r.output
    assert _digests(out) == first  # no harmonised copy of a harmonised file
