"""Every input read is bounded (issue 25, defect 5): a DICOM, a label table, the salt file
and the shards listed to ``verify`` are refused unless they are regular files on a file
system that holds data, and read with a byte cap. ``/proc`` files pass a plain regular-file
check and stream without end; FIFOs block the open; ``/dev/zero`` never ends. Each case
runs under a deadline (or in a child process with a timeout), so that the old code fails
instead of hanging the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mammoprep.errors import MammoprepError, NotRegularFileError, TooLargeError
from mammoprep.io.dicom import read_dicom, safe_read

from ..conftest import deadline

REPO = Path(__file__).resolve().parents[2]
PAGEMAP = "/proc/self/pagemap"
COHORT = dict(patients=2, seed=3, size=(160, 128))  # the `cohort` fixture (conftest.py)
needs_proc = pytest.mark.skipif(not os.path.exists(PAGEMAP), reason="no /proc here")
needs_zero = pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")


# -------------------------------------------------------------------------------- DICOM

@needs_proc
def test_proc_file_named_dcm_is_a_typed_reject(tmp_path):
    link = tmp_path / "b.dcm"
    link.symlink_to(PAGEMAP)
    with deadline():
        rec, err = safe_read(link)
    assert rec is None and isinstance(err, NotRegularFileError)
    assert "proc pseudo file system" in str(err) and "b.dcm" in str(err)


@needs_proc
def test_inspect_batch_goes_on_past_a_proc_file(tmp_path, cohort):
    """In a child process with a timeout: the old code read /proc/self/pagemap forever."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sorted(cohort.rglob("*.dcm"))[0], src / "a.dcm")
    (src / "b.dcm").symlink_to(PAGEMAP)
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "mammoprep.cli", "inspect", "--header-only",
                        str(src)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "a.dcm  OK" in r.stdout and "not_a_regular_file" in r.stdout


def test_dicom_larger_than_the_cap_is_refused(tmp_path, cohort, monkeypatch):
    import mammoprep.io.header as header

    f = tmp_path / "a.dcm"
    shutil.copy(sorted(cohort.rglob("*.dcm"))[0], f)
    monkeypatch.setattr(header, "MAX_DICOM_BYTES", f.stat().st_size - 1)
    with pytest.raises(TooLargeError, match="the DICOM file is larger than"):
        read_dicom(f)


# ---------------------------------------------------------------------- the bounded open

def test_open_input_caps_a_file_that_grows_while_it_is_read(tmp_path):
    from mammoprep.inputs import open_input

    f = tmp_path / "t.csv"
    f.write_bytes(b"x" * 100)
    with open_input(f, "label table", 150) as fh:
        assert fh.read(50) == b"x" * 50
        with open(f, "ab") as grow:  # another process appends while we read
            grow.write(b"y" * 1000)
        with pytest.raises(TooLargeError) as exc:
            fh.read()
    assert "t.csv: the label table is larger than 150 bytes" in str(exc.value)
    with pytest.raises(TooLargeError, match="larger than 1 KiB"):
        open_input(f, "label table", 1024)


# -------------------------------------------------------------------------- label tables

def _load(spec: str):
    from mammoprep.labels import load_labels

    with deadline():
        return load_labels(spec)


def test_label_table_fifo_is_refused_not_opened(tmp_path):
    fifo = tmp_path / "labels.csv"
    os.mkfifo(fifo)
    with pytest.raises(MammoprepError, match="FIFO") as exc:
        _load(f"csv:{fifo}")
    assert exc.value.kind == "bad_labels" and "labels.csv" in str(exc.value)
    assert "give the label table as" in str(exc.value) or "pass label tables" in str(
        exc.value)


@needs_zero
def test_label_table_linked_to_dev_zero_is_refused(tmp_path):
    link = tmp_path / "labels.csv"
    link.symlink_to("/dev/zero")
    with pytest.raises(MammoprepError, match="character device"):
        _load(f"csv:{link}")


@needs_proc
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_label_table_on_proc_is_refused(tmp_path, kind):
    link = tmp_path / f"labels.{kind}"
    link.symlink_to("/proc/self/status")
    with pytest.raises(MammoprepError, match="proc pseudo file system"):
        _load(f"{kind}:{link}")


# ------------------------------------------------------------------------------- salt

@pytest.mark.parametrize("make", ["fifo", "zero"])
def test_salt_file_fifo_or_device_is_refused_not_read(tmp_path, monkeypatch, make):
    from mammoprep.identity import SALT_ENV, SaltError, resolve_salt

    if make == "zero" and not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero here")
    monkeypatch.delenv(SALT_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    salt = tmp_path / "mammoprep" / "salt"
    salt.parent.mkdir()
    os.mkfifo(salt) if make == "fifo" else salt.symlink_to("/dev/zero")
    with deadline(), pytest.raises(SaltError) as exc:
        resolve_salt()
    assert "FIFO" in str(exc.value) or "character device" in str(exc.value)
    assert str(salt) in str(exc.value) and "--salt" in str(exc.value)


# ----------------------------------------------------------------------------- verify

@pytest.fixture(scope="module")
def shards(tmp_path_factory, cohort) -> Path:
    from mammoprep.pipeline import PrepConfig
    from mammoprep.shards.schema import ShardConfig
    from mammoprep.shards.write import build_shards

    out = tmp_path_factory.mktemp("bounds") / "shards"
    build_shards([str(cohort)], out, ShardConfig(prep=PrepConfig(size=64), folds=0,
                                                 samples_per_shard=64),
                 b"bounded-inputs-salt", log=lambda m: None)
    return out


@pytest.mark.parametrize("make", ["fifo", "zero"])
def test_verify_refuses_a_listed_tar_that_is_a_fifo_or_dev_zero(shards, tmp_path, make):
    from mammoprep.shards.verify import verify

    if make == "zero" and not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero here")
    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    tar = copy / "shard-000000.tar"
    tar.unlink()
    os.mkfifo(tar) if make == "fifo" else tar.symlink_to("/dev/zero")
    with deadline():
        problems = verify(copy)
    what = "a FIFO" if make == "fifo" else "a character device"
    assert any(p.startswith(f"{tar}: not a regular file but {what}") for p in problems), \
        problems
