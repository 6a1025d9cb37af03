"""`mammoprep reference`, `harmonize` and `preview` from the command line, on the synthetic
cohort and the real files: derived DICOMs valid, input untouched, layout mirrored, errors."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from mammoprep.cli import main
from mammoprep.io.dicom import read_dicom
from mammoprep.harmonise.match import Reference

from ..conftest import real


COHORT = dict(patients=6, seed=5, size=(160, 128))  # the `cohort` fixture (conftest.py)


@pytest.fixture(scope="module")
def ref(cohort, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("href") / "ref.npz"
    r = CliRunner().invoke(main, ["reference", str(cohort), "-o", str(path)])
    assert r.exit_code == 0, r.output
    assert "12-bit" in r.stdout and "left out" in r.stdout
    return path


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_reference_is_low_energy_only(cohort, ref):
    r = Reference.load(ref)
    with open(cohort / "labels.csv") as fh:
        low = [row for row in csv.DictReader(fh) if row["energy"] == "low"]
    assert r.bits == 12 and r.count == len(low)
    assert r.hist[0] == 0 and r.hist.sum() > 0


def test_harmonize_dicom_output(cohort, ref, tmp_path):
    before = _digest(cohort)
    out = tmp_path / "h"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(cohort), "-o", str(out),
                                  "-j", "1"])
    assert r.exit_code == 0, r.output
    assert _digest(cohort) == before  # inputs never modified
    inputs = sorted(p.relative_to(cohort) for p in cohort.rglob("*.dcm"))
    outputs = sorted(p.relative_to(out) for p in out.rglob("*.dcm"))
    assert inputs == outputs  # layout mirrored
    src = cohort / inputs[0]
    ds_in = pydicom.dcmread(src)
    ds = pydicom.dcmread(out / inputs[0])
    assert ds.PhotometricInterpretation == "MONOCHROME2" and not ds.file_meta.TransferSyntaxUID.is_compressed
    assert ds.SOPInstanceUID != ds_in.SOPInstanceUID
    # de-identified by default: the source is referenced by its de-identified UID only
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID != ds_in.SOPInstanceUID
    assert "CDF-matched" in ds.DerivationDescription or "not harmonised" in ds.DerivationDescription
    assert ds.BitsStored == 12 and ds.HighBit == 11
    assert ds.PatientIdentityRemoved == "YES" and ds.ImageType[0] == "DERIVED"
    assert ds.PatientName != ds_in.PatientName and ds.StudyInstanceUID != ds_in.StudyInstanceUID
    assert ds.SeriesInstanceUID != ds_in.SeriesInstanceUID
    assert (ds.Manufacturer, ds.KVP, ds.ImageLaterality) == (ds_in.Manufacturer, ds_in.KVP,
                                                            ds_in.ImageLaterality)
    px = ds.pixel_array
    assert px.max() <= 4095
    rec = read_dicom(out / inputs[0])  # and our own reader takes it back
    assert np.array_equal(rec.pixels, px)
    log = [json.loads(line) for line in (out / "harmonize_log.jsonl").read_text().splitlines()]
    assert len(log) == len(inputs) and all(x["status"] == "ok" for x in log)


def test_harmonize_only_high_leaves_low_unmatched(cohort, ref, tmp_path):
    out = tmp_path / "hi"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(cohort), "-o", str(out),
                                  "--only-energy", "high", "-j", "1", "--format", "png"])
    assert r.exit_code == 0, r.output
    log = [json.loads(line) for line in (out / "harmonize_log.jsonl").read_text().splitlines()]
    assert {x["energy"] for x in log if x["harmonized"]} == {"high"}
    assert {x["energy"] for x in log if not x["harmonized"]} == {"low"}
    pngs = list(out.rglob("*.png"))
    assert len(pngs) == len(log)
    from PIL import Image

    with Image.open(pngs[0]) as im:
        assert im.mode == "I;16" and im.size == (128, 160)


def test_harmonize_reports_bad_file_and_goes_on(cohort, ref, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    good = next(cohort.rglob("*.dcm"))
    (src / "good.dcm").write_bytes(good.read_bytes())
    (src / "bad.dcm").write_bytes(good.read_bytes()[:1500])
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(src), "-o", str(out),
                                  "-j", "1"])
    assert r.exit_code == 1
    assert "bad.dcm" in r.output and "1 written" in r.output and "1 failed" in r.output
    assert "(truncated 1)" in r.stdout  # rejects counted by reason
    assert (out / "good.dcm").exists() and not (out / "bad.dcm").exists()
    log = {Path(x["input"]).name: x for x in
           map(json.loads, (out / "harmonize_log.jsonl").read_text().splitlines())}
    assert log["bad.dcm"]["status"] == "error" and log["bad.dcm"]["kind"] == "truncated"
    assert "bad.dcm" in log["bad.dcm"]["error"]
    from mammoprep.segmentation.foreground import QC_FIELDS

    good = log["good.dcm"]
    assert good["status"] == "ok" and set(QC_FIELDS) <= set(good)
    assert 0 < good["breast_fraction"] < 1 and good["chest_wall"] in ("left", "right")


def _two_sites(cohort: Path, root: Path, second: str) -> tuple[Path, Path]:
    """root/siteA/p1/img.dcm and root/<second> (copies of two cohort images)."""
    a, b = sorted(cohort.rglob("*.dcm"))[:2]
    first = root / "siteA" / "p1" / "img.dcm"
    other = root / second
    for src, dst in ((a, first), (b, other)):
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    return first, other


def test_harmonize_mirrors_below_the_common_root(cohort, ref, tmp_path):
    a, b = _two_sites(cohort, tmp_path / "in", "siteB/p1/img.dcm")
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(a.parents[1]),
                                  str(b.parents[1]), "-o", str(out), "-j", "2"])  # the pool
    assert r.exit_code == 0, r.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.dcm")) == \
        ["siteA/p1/img.dcm", "siteB/p1/img.dcm"]  # each parent alone gave p1/img.dcm twice
    assert "2 written" in r.stdout


def test_harmonize_output_collision_fails_before_writing(cohort, ref, tmp_path):
    a, b = _two_sites(cohort, tmp_path / "in", "siteA/p1/img.dicom")  # both -> img.dcm
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(a), str(b), "-o",
                                  str(out), "-j", "1"])
    assert r.exit_code == 2, r.output
    assert str(a) in r.output and str(b) in r.output and "nothing was written" in r.output
    assert not out.exists()
    # the same check holds when the reference is a folder (it would be saved into OUT)
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(cohort), str(a), str(b), "-o",
                                  str(out)])
    assert r.exit_code == 2 and not out.exists()


def test_one_file_named_twice_is_one_input(cohort, ref, tmp_path):
    a, _ = _two_sites(cohort, tmp_path / "in", "siteB/p1/img.dcm")
    spelt = a.parent / ".." / "p1" / a.name  # the same file, another spelling
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(a), str(spelt), "-o",
                                  str(out), "-j", "1"])
    assert r.exit_code == 0, r.output
    assert "1 written" in r.stdout and [p.name for p in out.rglob("*.dcm")] == ["img.dcm"]


def test_harmonize_keeps_uid_named_files_apart(cohort, ref, tmp_path):
    # suffix-less files named by UID: '1.2.3.4' and '1.2.3.5' must not both become '1.2.3.dcm'
    src = tmp_path / "in"
    src.mkdir()
    for name, f in zip(("1.2.3.4", "1.2.3.5"), sorted(cohort.rglob("*.dcm"))[:2]):
        (src / name).write_bytes(f.read_bytes())
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(src / "1.2.3.4"),
                                  str(src / "1.2.3.5"), "-o", str(out), "-j", "1"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.rglob("*.dcm")) == ["1.2.3.4.dcm", "1.2.3.5.dcm"]


def test_ref_from_dicom_file_and_dir(cohort, tmp_path):
    low = next(p for p in cohort.rglob("*.dcm")
               if pydicom.dcmread(p, stop_before_pixels=True).Manufacturer == "METALTRONICA")
    out = tmp_path / "x"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(low), str(low), "-o", str(out)])
    assert r.exit_code == 0, r.output
    # an image matched to its own histogram is the identity (on its text-free pixels)
    from mammoprep.segmentation.foreground import remove_text

    expected = remove_text(read_dicom(low)).pixels
    assert np.array_equal(read_dicom(out / low.name).pixels, expected)
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(cohort), str(low), "-o",
                                  str(tmp_path / "y")])
    assert r.exit_code == 0, r.output


def test_bad_reference_file_is_a_clear_error(cohort, tmp_path):
    bad = tmp_path / "ref.npz"
    bad.write_bytes(b"not an npz")
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(bad), str(cohort), "-o",
                                  str(tmp_path / "o")])
    assert r.exit_code != 0 and str(bad) in r.output and "Traceback" not in r.output


def test_preview_png(cohort, ref, tmp_path):
    from PIL import Image

    f = next(cohort.rglob("*.dcm"))
    out = tmp_path / "p.png"
    r = CliRunner().invoke(main, ["preview", str(f), "--ref", str(ref), "-o", str(out)])
    assert r.exit_code == 0, r.output
    with Image.open(out) as im:
        assert im.size[0] > 500 and im.size[1] > 400


def test_harmonize_real_ge_file(ref, tmp_path):
    out = tmp_path / "ge"
    path = real("fodicom_GH133_GE_SenographeEssential.dcm")
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    px = pydicom.dcmread(out / path.name).pixel_array
    h, w = px.shape
    k = 50
    assert px[:k, :k].max() == 0 and px[-k:, :k].max() == 0  # corners are background
    assert (px > 0).mean() > 0.2  # the breast stays


def _plant_suspect(cohort: Path, dst: Path) -> Path:
    """A low-energy cohort image with a bright band filling the half opposite the chest
    wall from top to bottom (a halo without a skin line): fails the quality gate."""
    from pydicom.uid import ExplicitVRLittleEndian

    src = next(p for p in sorted(cohort.rglob("*.dcm"))
               if pydicom.dcmread(p, stop_before_pixels=True).Manufacturer == "METALTRONICA")
    ds = pydicom.dcmread(src)
    ds.decompress()
    px = ds.pixel_array.copy()
    cols = px.shape[1]
    wall_left = px[:, :8].mean() > px[:, -8:].mean()
    far = slice(cols // 2, None) if wall_left else slice(0, cols // 2)
    px[:, far] = np.maximum(px[:, far], int(0.65 * 4095))
    ds.PixelData = px.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def test_suspect_segmentation_is_a_counted_reject_unless_kept(cohort, ref, tmp_path):
    src = tmp_path / "in"
    good = next(p for p in sorted(cohort.rglob("*.dcm"))
                if pydicom.dcmread(p, stop_before_pixels=True).Manufacturer == "METALTRONICA")
    (src / "good.dcm").parent.mkdir(parents=True)
    (src / "good.dcm").write_bytes(good.read_bytes())
    _plant_suspect(cohort, src / "suspect.dcm")

    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(src), "-o", str(out),
                                  "-j", "1"])
    assert r.exit_code == 1, r.output
    assert "1 written" in r.stdout and "(segmentation_suspect 1)" in r.stdout
    log = {Path(x["input"]).name: x for x in
           map(json.loads, (out / "harmonize_log.jsonl").read_text().splitlines())}
    assert log["suspect.dcm"]["kind"] == "segmentation_suspect"
    assert "suspect.dcm" in log["suspect.dcm"]["error"]
    assert log["good.dcm"]["qc"] == "ok" and not (out / "suspect.dcm").exists()

    kept = tmp_path / "k"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(src), "-o", str(kept),
                                  "-j", "1", "--keep-suspect"])
    assert r.exit_code == 0, r.output
    assert "2 written" in r.stdout and "1 kept with qc=suspect" in r.stdout
    log = {Path(x["input"]).name: x for x in
           map(json.loads, (kept / "harmonize_log.jsonl").read_text().splitlines())}
    assert log["suspect.dcm"]["qc"] == "suspect" and log["suspect.dcm"]["qc_reason"]
    assert (kept / "suspect.dcm").exists()

    # the reference leaves it out with the same reason, or pools it when asked
    r = CliRunner().invoke(main, ["reference", "--energy", "any", str(src), "-o",
                                  str(tmp_path / "r.npz")])
    assert r.exit_code == 0, r.output
    assert "segmentation_suspect 1" in r.stdout and Reference.load(tmp_path / "r.npz").count == 1
    r = CliRunner().invoke(main, ["reference", "--energy", "any", "--keep-suspect", str(src),
                                  "-o", str(tmp_path / "r2.npz")])
    assert r.exit_code == 0, r.output
    assert Reference.load(tmp_path / "r2.npz").count == 2


def test_serial_log_keeps_input_order_around_failures(cohort, ref, tmp_path):
    # -j 1 writes file i while file i+1 is processed: rows still come in input order
    src = tmp_path / "in"
    src.mkdir()
    good = sorted(cohort.rglob("*.dcm"))[:2]
    (src / "a.dcm").write_bytes(good[0].read_bytes())
    (src / "b.dcm").write_bytes(good[0].read_bytes()[:1500])
    (src / "c.dcm").write_bytes(good[1].read_bytes())
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(src), "-o", str(out),
                                  "-j", "1", "--format", "png"])
    assert r.exit_code == 1
    log = [json.loads(x) for x in (out / "harmonize_log.jsonl").read_text().splitlines()]
    assert [Path(x["input"]).name for x in log] == ["a.dcm", "b.dcm", "c.dcm"]
    assert [x["status"] for x in log] == ["ok", "error", "ok"]
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "c.png"]


def test_harmonize_imports_only_what_it_needs(cohort, ref, tmp_path):
    # a fresh interpreter runs the command: nothing of preview, shards or training is loaded
    import subprocess
    import sys

    f = sorted(cohort.rglob("*.dcm"))[0]
    code = ("import sys\nfrom mammoprep.cli import main\n"
            f"try:\n    main(['harmonize', '--ref', {str(ref)!r}, {str(f)!r}, '-o', "
            f"{str(tmp_path / 'o')!r}, '-j', '1', '--format', 'png'])\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    loaded = set(r.stdout.split())
    assert "mammoprep" in loaded and "numba" in loaded
    assert not loaded & {"matplotlib", "pyarrow", "torch", "webdataset", "sklearn", "skimage",
                         "mammotrain", "scipy"}  # scipy: Numba's BLAS probe is skipped


def test_read_ahead_threads_and_pool_write_the_same_bytes(cohort, ref, tmp_path):
    # -j 1 reads file i+1 and writes file i-1 in threads while file i is processed; a pool
    # of 2 (spawned, or forked by the console script) does the same per batch of 3 files:
    # every output byte (and the log's rows) agree
    src = tmp_path / "in"
    src.mkdir()
    for i, f in enumerate(sorted(cohort.rglob("*.dcm"))[:5]):
        (src / f"{i}.dcm").write_bytes(f.read_bytes())
    (src / "2b.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 40)  # a reject in between
    import shutil
    import subprocess
    import sys

    exe = shutil.which("mammoprep", path=str(Path(sys.executable).parent))
    outs = {}
    for jobs in ("1", "2", "fork"):
        out = tmp_path / f"o{jobs}"
        args = ["harmonize", "--ref", str(ref), str(src), "-o", str(out)]
        if jobs == "fork":  # the console script in a fresh process: its pool is forked
            r = subprocess.run([exe, *args, "-j", "2"], capture_output=True, text=True)
            assert r.returncode == 1 and "5 written" in r.stdout, r.stderr
        else:  # in this process: -j 1 here, and a pool of spawned workers (Numba is loaded)
            r = CliRunner().invoke(main, [*args, "-j", jobs])
            assert r.exit_code == 1 and "5 written" in r.stdout, r.output
        log = [json.loads(x) for x in (out / "harmonize_log.jsonl").read_text().splitlines()]
        outs[jobs] = ({k: v for k, v in _digest(out).items() if k.endswith(".dcm")},
                      [(Path(x["input"]).name, x["status"], x.get("kind")) for x in log])
    assert len(outs["1"][0]) == 5 and outs["1"] == outs["2"] == outs["fork"]
    assert [row[1] for row in outs["1"][1]] == ["ok", "ok", "ok", "error", "ok", "ok"]


def test_console_script_exits_with_the_status_and_all_output(cohort, ref, tmp_path):
    # the installed `mammoprep` leaves without interpreter teardown (os._exit): its exit
    # status, stdout summary, stderr errors and every file must still all be there
    import shutil
    import subprocess
    import sys

    exe = shutil.which("mammoprep", path=str(Path(sys.executable).parent))
    assert exe, "the mammoprep console script is not installed next to this Python"
    src = tmp_path / "in"
    src.mkdir()
    good = sorted(cohort.rglob("*.dcm"))[0]
    (src / "a.dcm").write_bytes(good.read_bytes())
    (src / "b.dcm").write_bytes(b"not a dicom at all")
    out = tmp_path / "o"
    r = subprocess.run([exe, "--no-progress", "harmonize", "--ref", str(ref), str(src), "-o",
                        str(out)], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "1 written" in r.stdout and "1 failed" in r.stdout
    assert "ERROR (" in r.stderr and "b.dcm" in r.stderr
    assert len((out / "harmonize_log.jsonl").read_text().splitlines()) == 2
    assert pydicom.dcmread(out / "a.dcm").pixel_array.shape == read_dicom(good).pixels.shape
    r = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "version" in r.stdout
    r = subprocess.run([exe, "no-such-command"], capture_output=True, text=True)
    assert r.returncode == 2 and "No such command" in r.stderr


def test_auto_jobs_is_one_worker_per_core():
    from mammoprep.batch import auto_jobs

    assert [auto_jobs(c) for c in (1, 2, 3, 8)] == [1, 2, 3, 8]


def test_batches_are_bounded_and_come_in_as_few_equal_rounds_as_possible():
    import math

    from mammoprep.batch import MAX_BATCH, batch_size

    assert [batch_size(24, 2), batch_size(96, 2), batch_size(10**6, 2)] == [12, 24, 32]
    assert batch_size(5, 8) == 1 and batch_size(0, 2) == 1
    for workers in (1, 2, 3, 8):
        for files in range(1, 600, 7):
            b = batch_size(files, workers)
            rounds = math.ceil(math.ceil(files / b) / workers)  # batches each worker gets
            assert 1 <= b <= MAX_BATCH
            assert rounds == math.ceil(files / (workers * MAX_BATCH)), (files, workers, b)


def test_a_pool_worker_ends_when_its_parent_is_killed(tmp_path):
    # kill -9 of `harmonize` must not leave workers writing on, unlocked, or waiting forever
    import signal
    import subprocess
    import sys
    import time

    child = ("import time\nfrom mammoprep.batch import watch_parent\n"
             "import os\nwatch_parent(os.getppid(), 0.05)\ntime.sleep(120)")
    middle = ("import subprocess, sys, time\n"
              f"p = subprocess.Popen([sys.executable, '-c', {child!r}])\n"
              "print(p.pid, flush=True)\ntime.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", middle], stdout=subprocess.PIPE, text=True)
    pid = int(proc.stdout.readline())
    time.sleep(1.0)  # the child has imported and started watching
    assert _running(pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid), "the worker outlived its parent"


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return not any(line.startswith("State:") and "Z" in line.split()[1:2]
                           for line in fh)
    except FileNotFoundError:
        return False


def test_harmonize_bar_only_on_a_terminal_or_when_asked(cohort, ref, tmp_path, monkeypatch):
    from mammoprep import options

    monkeypatch.setattr(options, "PROGRESS", None)
    f = str(sorted(cohort.rglob("*.dcm"))[0])
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), f, "-o", str(tmp_path / "a")])
    assert r.exit_code == 0 and "harmonize:" not in r.output  # CliRunner: not a terminal
    r = CliRunner().invoke(main, ["--progress", "harmonize", "--ref", str(ref), f, "-o",
                                  str(tmp_path / "b")])
    assert r.exit_code == 0 and "harmonize:" in r.output and "1/1" in r.output


def test_no_bar_no_tqdm(cohort, ref, tmp_path):
    """Where no bar is shown (stderr is a pipe), the command's process (here the parent of
    a pool, which decodes nothing: pydicom imports tqdm too) never imports tqdm, whose
    import reads its package metadata; asked for, the bar is there."""
    import subprocess
    import sys

    files = [str(f) for f in sorted(cohort.rglob("*.dcm"))[:2]]
    code = """
import sys
from mammoprep.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    print("tqdm" in sys.modules)
"""
    for flags, expected in (([], "False"), (["--progress"], "True")):
        args = [*flags, "harmonize", "-j", "2", "--ref", str(ref), *files, "-o",
                str(tmp_path / str(len(flags)))]
        r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[-1] == expected, (flags, r.stdout)
        assert ("harmonize:" in r.stderr) == bool(flags), r.stderr


def test_garbage_collection_paused_only_for_the_start_up(cohort, ref, tmp_path):
    # a fresh interpreter: the collector is off while Numba, pydicom and the kernels load,
    # everything alive then is frozen out of later collections, and it is back on for the
    # images (and after the command, also when the command fails)
    import subprocess
    import sys

    f = sorted(cohort.rglob("*.dcm"))[0]
    code = f"""
import gc, sys
import mammoprep.runtime as R
from mammoprep.cli import main
seen = []
real = R.started
def started():
    seen.append((gc.isenabled(), 'numba.np.arraymath' in sys.modules, 'pydicom' in sys.modules))
    real()
    seen.append((gc.isenabled(), gc.get_freeze_count()))
R.started = started
for args in (['-j', '1'], ['--energy-table', {str(f)!r}]):
    try:
        main(['harmonize', '--ref', {str(ref)!r}, {str(f)!r}, '-o', {str(tmp_path / 'o')!r}, *args])
    except SystemExit as e:
        seen.append(('exit', e.code, gc.isenabled()))
print("SEEN", seen)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import ast

    seen = ast.literal_eval(r.stdout.split("SEEN ", 1)[1])
    first, after = seen[0], seen[1]
    assert first == (False, True, True)              # paused until kernels and pydicom loaded
    assert after[0] is True and after[1] > 100_000   # resumed, start-up objects frozen
    exits = [s for s in seen if s[0] == "exit"]
    assert exits[0] == ("exit", 0, True)              # the run
    assert exits[1][1] != 0 and exits[1][2] is True   # a bad energy table: still resumed

