"""Faults while writing and hostile shard folders: a full disk and a permission failure
(injected at the OS boundary, ``os.fsync``), a crash's 0-byte config.json, a concurrent run on
one folder, stale shards of other options, a swapped reference or label table, and `verify`
on tampered folders. Each gives one clear error or problem line and a state the next run
resumes from, byte-identical to a run that never failed."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from mammoprep.atomic import FolderLockedError, atomic_write
from mammoprep.cli import main
from mammoprep.errors import MammoprepError, WriteError
from mammoprep.pipeline import PrepConfig
from mammoprep.shards.schema import ShardConfig
from mammoprep.shards.write import build_shards
from mammoprep.shards.verify import verify
from mammoprep.synth import generate_cohort

SALT = b"faults-test-salt-not-secret-0123"


COHORT = dict(patients=4, seed=5, size=(128, 104))  # the `cohort` fixture (conftest.py)


def _cfg(cohort: Path, **kw) -> ShardConfig:
    return ShardConfig(prep=PrepConfig(size=kw.pop("size", 48), reference=kw.pop("ref", None)),
                       labels=kw.pop("labels", f"lumina:{cohort}"),
                       samples_per_shard=kw.pop("samples_per_shard", 2), folds=0, **kw)


@pytest.fixture(scope="module")
def clean(cohort, tmp_path_factory) -> Path:
    """Shards of a run that never failed (the reference for byte-identical resumes)."""
    out = tmp_path_factory.mktemp("fclean") / "out"
    build_shards([str(cohort)], out, _cfg(cohort), SALT, log=lambda m: None)
    assert verify(out) == []
    return out


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.glob("shard-*.tar"))}


def _fail_fsync(monkeypatch, err: int, when) -> list[str]:
    """Make ``os.fsync`` raise OSError(err) for files whose path satisfies ``when(path,
    n)`` (n: how many fsyncs of shard outputs came before); returns the failed paths."""
    real = os.fsync
    failed: list[str] = []
    seen = [0]

    def fsync(fd):
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        if path.endswith(".tmp"):
            seen[0] += 1
            if when(path, seen[0]):
                failed.append(path)
                raise OSError(err, os.strerror(err))
        return real(fd)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to find the file behind an fd")
    monkeypatch.setattr(os, "fsync", fsync)
    return failed


# -------------------------------------------------------------------- disk full, EACCES

def test_disk_full_mid_run_is_one_error_and_the_rerun_resumes(cohort, clean, tmp_path,
                                                              monkeypatch):
    out = tmp_path / "out"
    failed = _fail_fsync(monkeypatch, errno.ENOSPC, lambda p, n: n == 4)  # the 2nd shard
    with pytest.raises(WriteError) as exc:
        build_shards([str(cohort)], out, _cfg(cohort), SALT, log=lambda m: None)
    msg = str(exc.value)
    assert failed and exc.value.kind == "write_failed"
    assert "shard-000001.tar" in msg and "No space left on device" in msg and "ENOSPC" in msg
    assert "disk is full" in msg and "\n" not in msg
    # nothing partial under a final name, no temporary left, no manifests yet
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    assert not (out / "config.json").exists()
    good = _digests(clean)
    for name, digest in _digests(out).items():
        assert good[name] == digest
    monkeypatch.undo()
    build_shards([str(cohort)], out, _cfg(cohort), SALT, log=lambda m: None)
    assert _digests(out) == good and verify(out) == []
    for m in ("images.parquet", "shards.parquet", "rejects.parquet"):
        assert (out / m).read_bytes() == (clean / m).read_bytes()


@pytest.mark.parametrize("err,words", [(errno.ENOSPC, "disk is full"),
                                       (errno.EACCES, "permission denied")])
def test_cli_write_failure_is_one_line_without_traceback(cohort, tmp_path, monkeypatch, err,
                                                         words):
    """Workers are separate processes: the fault hits the manifests, written by the CLI's
    own process; the shards it wrote are kept and the rerun completes the folder."""
    out = tmp_path / "out"
    _fail_fsync(monkeypatch, err, lambda p, n: "images.parquet" in p)
    args = ["shard", str(cohort), "-o", str(out), "--labels", f"lumina:{cohort}", "--size",
            "48", "--folds", "0", "--samples-per-shard", "2", "-j", "1", "--salt",
            SALT.decode(), "--no-progress"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "images.parquet" in errors[0] and words in errors[0]
    assert "Traceback" not in r.output
    assert list(out.glob("shard-*.tar")) and not (out / "images.parquet").exists()
    monkeypatch.undo()
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert verify(out) == []


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    atomic_write(target, b"old")
    _fail_fsync(monkeypatch, errno.ENOSPC, lambda p, n: True)
    with pytest.raises(WriteError, match="x.json"):
        atomic_write(target, b"new and longer")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


@pytest.mark.parametrize("sizes", [(0, 1), (100, 3996), (128, 4097), (300, 9, 1 << 20)])
def test_write_parts_direct_and_buffered_give_the_same_bytes(tmp_path, monkeypatch, sizes):
    # O_DIRECT writes padded aligned blocks and truncates: the file is exactly the parts,
    # and the same where O_DIRECT is refused (EINVAL from open, as on some file systems)
    from mammoprep.atomic import write_parts

    rng = np.random.default_rng(sum(sizes))
    parts = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]
    want = b"".join(parts)
    write_parts(tmp_path / "d.bin", parts)
    assert (tmp_path / "d.bin").read_bytes() == want
    real_open = os.open
    refused = []

    def no_direct(path, flags, *a):
        if flags & getattr(os, "O_DIRECT", 0):
            refused.append(path)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *a)

    monkeypatch.setattr(os, "open", no_direct)
    write_parts(tmp_path / "b.bin", parts)
    assert (tmp_path / "b.bin").read_bytes() == want
    assert refused or not hasattr(os, "O_DIRECT")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "d.bin"]  # no temporaries


def test_write_parts_keeps_the_old_file_on_a_full_disk(tmp_path, monkeypatch):
    from mammoprep.atomic import write_parts

    target = tmp_path / "x.dcm"
    write_parts(target, [b"old"])
    _fail_fsync(monkeypatch, errno.ENOSPC, lambda p, n: True)
    with pytest.raises(OSError) as exc:
        write_parts(target, [b"new", bytes(10000)])
    assert exc.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.dcm"]


# ----------------------------------------------------------------- crash leftovers, lock

def test_empty_config_json_from_a_crash_is_ignored_with_a_warning(cohort, clean, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    (out / "config.json").write_bytes(b"")
    assert any("config.json" in p and "empty" in p for p in verify(out))
    said: list[str] = []
    build_shards([str(cohort)], out, _cfg(cohort), SALT, log=said.append)
    assert any("config.json" in m and "ignored" in m for m in said)
    assert verify(out) == [] and _digests(out) == _digests(clean)


def test_a_second_run_on_the_same_folder_is_refused(cohort, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, sys, time
            fh = open({str(out / '.lock')!r}, 'a+b')
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            print('locked', flush=True)
            time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError, match="another mammoprep run is writing"):
            build_shards([str(cohort)], out, _cfg(cohort), SALT, log=lambda m: None)
        assert not list(out.glob("shard-*"))
    finally:
        holder.kill()
        holder.wait()
    build_shards([str(cohort)], out, _cfg(cohort), SALT, log=lambda m: None)  # lock released
    assert verify(out) == []


def test_stale_shards_of_other_options_are_refused_then_replaced(cohort, clean, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    (out / "config.json").unlink()  # a run with other options that died before its manifests
    other = _cfg(cohort, samples_per_shard=3)
    with pytest.raises(MammoprepError, match="--overwrite") as exc:
        build_shards([str(cohort)], out, other, SALT, log=lambda m: None)
    assert ".parts" in str(exc.value)
    (out / "notes.txt").write_text("mine")
    build_shards([str(cohort)], out, other, SALT, log=lambda m: None, overwrite=True)
    n = len(pq.read_table(out / "shards.parquet"))
    assert len(list(out.glob("shard-*.tar"))) == n < len(_digests(clean))
    assert verify(out) == [] and (out / "notes.txt").read_text() == "mine"


def test_shards_the_plan_no_longer_has_are_removed(cohort, clean, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    build_shards([str(cohort / "Benign")], out, _cfg(cohort), SALT, log=lambda m: None)
    listed = {r["shard"] for r in pq.read_table(out / "shards.parquet").to_pylist()}
    assert {p.name for p in out.glob("shard-*.tar")} == listed
    assert len(listed) < len(_digests(clean)) and verify(out) == []


def test_changed_reference_or_label_table_is_refused(cohort, tmp_path):
    files = sorted(cohort.rglob("*.dcm"))
    ref = tmp_path / "ref.dcm"
    ref.write_bytes(files[0].read_bytes())
    table = tmp_path / "labels.csv"
    table.write_text((cohort / "labels.csv").read_text())
    out = tmp_path / "out"
    cfg = _cfg(cohort, ref=str(ref), labels=f"csv:{table}")
    build_shards([str(cohort)], out, cfg, SALT, log=lambda m: None)
    build_shards([str(cohort)], out, cfg, SALT, log=lambda m: None)  # same content: resumes
    ref.write_bytes(files[1].read_bytes())  # same path, other content
    with pytest.raises(MammoprepError, match="reference_sha256") as exc:
        build_shards([str(cohort)], out, cfg, SALT, log=lambda m: None)
    assert "--overwrite" in str(exc.value)
    ref.write_bytes(files[0].read_bytes())
    lines = table.read_text().splitlines()
    table.write_text("\n".join(lines[:-1]) + "\n")  # one label row fewer
    with pytest.raises(MammoprepError, match="labels_digest"):
        build_shards([str(cohort)], out, cfg, SALT, log=lambda m: None)


# ------------------------------------------------------------------------------- verify

@pytest.fixture
def copy(clean, tmp_path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(clean, out)
    return out


def test_verify_finds_an_unlisted_tar(copy):
    shutil.copy(copy / "shard-000000.tar", copy / "shard-000099.tar")
    assert verify(copy) == [f"{copy / 'shard-000099.tar'}: tar not listed in shards.parquet "
                            "(stale or foreign)"]


def test_verify_finds_a_bit_flip_in_images_parquet(copy):
    data = bytearray((copy / "images.parquet").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "images.parquet").write_bytes(bytes(data))
    problems = verify(copy)
    assert any(p.startswith(f"{copy / 'images.parquet'}: sha256 differs") for p in problems)


def test_verify_fails_on_an_empty_config_and_a_truncated_manifest(copy):
    (copy / "config.json").write_text("")
    data = (copy / "shards.parquet").read_bytes()
    (copy / "shards.parquet").write_bytes(data[: len(data) // 2])
    problems = verify(copy)
    assert any("config.json: empty or not valid JSON" in p for p in problems)
    assert any("shards.parquet: not a readable Parquet file" in p for p in problems)
    r = CliRunner().invoke(main, ["verify", str(copy)])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    assert "FAILED" in r.output and "Traceback" not in r.output


# ------------------------------------------------------------------- kill -9 of harmonize

@pytest.mark.parametrize("fmt", ["png", "dicom"])
def test_kill_9_of_harmonize_leaves_no_corrupt_file_under_a_final_name(tmp_path, fmt):
    import signal
    import time

    import numpy as np
    import pydicom

    from mammoprep.io.png import decode_png16

    src = tmp_path / "cohort"
    generate_cohort(src, patients=8, seed=9, size=(512, 416))  # 32 images: time to kill
    out = tmp_path / "out"
    suffix = ".png" if fmt == "png" else ".dcm"
    args = [sys.executable, "-m", "mammoprep.cli", "harmonize", "--ref", str(src), str(src),
            "-o", str(out), "-j", "1", "--format", fmt, "--salt", SALT.decode()]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(out.rglob(f"*{suffix}"))) >= 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "harmonize finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finals = [p for p in out.rglob(f"*{suffix}") if not p.name.startswith(".")]
    assert finals
    for f in finals:  # complete or absent: never a partial file under its final name
        if fmt == "png":
            assert decode_png16(f.read_bytes()).shape[0] > 0
        else:
            ds = pydicom.dcmread(f)
            assert np.asarray(ds.pixel_array).shape == (int(ds.Rows), int(ds.Columns))
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(list(out.rglob(f"*{suffix}"))) == len(list(src.rglob("*.dcm")))
    assert not list(out.rglob("*.tmp"))  # the killed run's temporaries are cleaned up


# ------------------------------------------------------------------- boxes against image

def test_a_box_outside_its_image_is_dropped_or_stops_a_strict_shard(cohort, tmp_path):
    """It used to be clipped to an empty [0, 0, 0, 0] box in the shard. By default the box
    is left out and counted (one odd row never stops an archive); --strict-labels stops,
    naming the row, the box and the image size."""
    import pyarrow.parquet as pq

    from mammoprep.labels import LabelError

    files = sorted(cohort.rglob("*.dcm"))
    img = files[0]  # 128 rows x 104 columns
    table = tmp_path / "labels.csv"
    table.write_text(f"path,boxes\n{img},\"[[10, 10, 40, 40]]\"\n"
                     f"{files[1]},\"[[200, 300, 260, 380]]\"\n")
    cfg = _cfg(cohort, labels=f"csv:{table}")
    with pytest.raises(LabelError) as exc:
        build_shards([str(cohort)], tmp_path / "strict", cfg, SALT, log=lambda m: None,
                     strict_labels=True)
    msg = str(exc.value)
    assert f"{table}:3" in msg and "outside its image" in msg and "104 pixels wide" in msg
    assert not (tmp_path / "strict" / "images.parquet").exists()  # nothing written
    summary = build_shards([str(cohort)], tmp_path / "out", cfg, SALT, log=lambda m: None)
    dropped = summary["labels"]["dropped_values"]
    assert dropped["boxes"]["count"] == 1 and "labels.csv:3" in dropped["boxes"]["examples"][0]
    rows = {r["sop_uid_hash"]: r for r in pq.read_table(tmp_path / "out" /
                                                           "images.parquet").to_pylist()}
    boxes = sorted(len(r["boxes_original"]) for r in rows.values())
    assert boxes.count(1) == 1 and sum(boxes) == 1  # the good box kept, the bad one not
    table.write_text(f"path,boxes\n{img},\"[[NaN, 10, 40, 40]]\"\n")
    with pytest.raises(LabelError, match="NaN is not a JSON number"):
        build_shards([str(cohort)], tmp_path / "strict2", _cfg(cohort, labels=f"csv:{table}"),
                     SALT, log=lambda m: None, strict_labels=True)


# ------------------------------------------------------------- harmonize / reference faults

def test_harmonize_disk_full_is_one_error_and_the_rerun_completes(cohort, tmp_path,
                                                                    monkeypatch):
    out = tmp_path / "h"
    ref = tmp_path / "ref.npz"
    r = CliRunner().invoke(main, ["reference", str(cohort), "-o", str(ref)])
    assert r.exit_code == 0, r.output
    args = ["harmonize", "--ref", str(ref), str(cohort), "-o", str(out), "-j", "1",
            "--salt", SALT.decode()]
    _fail_fsync(monkeypatch, errno.ENOSPC, lambda p, n: True)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    lines = r.output.splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], r.output
    assert "disk" in errors[0] and "output(s) not written" in errors[0]
    assert "Traceback" not in r.output
    assert not any(line.startswith("ERROR (write_failed)") for line in lines)
    assert not [p for p in out.rglob("*") if p.is_file() and p.name != ".lock"]  # nothing partial
    monkeypatch.undo()
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    n = len(list(cohort.rglob("*.dcm")))
    assert len(list(out.rglob("*.dcm"))) == n
    assert len((out / "harmonize_log.jsonl").read_text().splitlines()) == n


def test_reference_disk_full_is_one_line(cohort, tmp_path, monkeypatch):
    _fail_fsync(monkeypatch, errno.ENOSPC, lambda p, n: True)
    r = CliRunner().invoke(main, ["reference", str(cohort), "-o", str(tmp_path / "r.npz")])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert "r.npz: cannot write (No space left on device)" in r.output
    assert "Traceback" not in r.output and not list(tmp_path.iterdir())


def test_second_harmonize_on_the_same_output_folder_is_refused(tmp_path):
    """`harmonize` holds OUT/.lock for the whole run, like `shard`."""
    import numpy as np
    from click.testing import CliRunner

    from mammoprep.atomic import output_lock
    from mammoprep.cli import main
    from mammoprep.harmonise.match import Reference
    from mammoprep.synth import generate_cohort

    src = tmp_path / "c"
    generate_cohort(src, patients=1, seed=3, size=(160, 128))
    ref = tmp_path / "ref.npz"
    Reference.from_histograms([np.ones(4096, np.int64)], bits=12).save(ref)
    out = tmp_path / "h"
    with output_lock(out, "harmonize"):
        r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(src), "-o", str(out),
                                      "-j", "1", "--format", "png"])
    assert r.exit_code == 1 and "another `mammoprep harmonize`" in r.output
    assert not list(out.rglob("*.png"))
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(src), "-o", str(out),
                                  "-j", "1", "--format", "png"])
    assert r.exit_code == 0, r.output  # the lock was released with the first holder
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(src), "-o", str(out),
                                  "-j", "1", "--format", "png"])
    assert r.exit_code == 0, r.output  # and by each finished run
