"""Packaging: what works without the optional extras (``gpl``, ``fast``, ``train``).

Absence is simulated faithfully, not by mocking a codec: :func:`run_without` runs a fresh
interpreter (``python -S``) whose ``sys.path`` is this checkout plus a copy (symlinks) of the
virtual environment's site-packages *without* the files of the hidden distributions (their
modules, compiled libraries and ``.dist-info``). So imports fail and entry points are gone,
exactly as after ``pip uninstall`` (a ``sys.modules[name] = None`` shim is not enough:
pylibjpeg would still find libjpeg's entry point and crash on import).
"""

from __future__ import annotations

import csv
import importlib.metadata as md
import os
import subprocess
import sys
import sysconfig
import tomllib
from collections import Counter
from pathlib import Path

import pydicom
import pytest

from ..conftest import REPO, real

GE = "fodicom_GH133_GE_SenographeEssential.dcm"            # JPEG lossless SV1, 12 bit
BASELINE = "edge/orthanc_Issue44_Monochrome1-Jpeg.dcm"     # JPEG baseline, 8 bit
JLS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"

#: every distribution of an extra that these tests hide (names as pip knows them)
GPL = ("pylibjpeg-libjpeg",)
FAST = ("imagecodecs", "pyjpegls")
TRAIN = ("torch", "timm", "webdataset", "torchvision", "safetensors", "torchmetrics",
         "pycocotools")


def _site_without(hidden: tuple[str, ...], root: Path) -> Path:
    """A folder of symlinks to every site-packages entry but those of ``hidden``."""
    site = Path(sysconfig.get_paths()["purelib"])
    skip: set[str] = set()
    for name in hidden:
        try:
            files = md.distribution(name).files or []
        except md.PackageNotFoundError:
            continue
        skip.update(Path(str(f)).parts[0] for f in files
                    if Path(str(f)).parts and Path(str(f)).parts[0] != "..")
    root.mkdir(parents=True, exist_ok=True)
    for entry in site.iterdir():
        if entry.name not in skip and entry.suffix != ".pth":
            (root / entry.name).symlink_to(entry)
    return root


def run_without(hidden: tuple[str, ...], code: str, args: list[str], tmp: Path
                ) -> subprocess.CompletedProcess:
    """Run ``python -S -c code args...`` with the distributions ``hidden`` uninstalled."""
    site = _site_without(hidden, tmp / "site")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(site)]))
    return subprocess.run([sys.executable, "-S", "-c", code, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


MAMMOPREP = "from mammoprep.cli import main; main()"
MAMMOTRAIN = "from mammotrain.cli import main; main()"
READ = ("import sys; from mammoprep.io.dicom import read_dicom; r = read_dicom(sys.argv[1]); "
        "p = r.pixels; print(r.meta['decoder'], p.shape[0], p.shape[1], int(p.max()), "
        "int(p[1531, 1197]), int(p[1020, 598]), int(p[3057, 2389]))")


def _installed(name: str) -> bool:
    try:
        md.distribution(name)
        return True
    except md.PackageNotFoundError:
        return False


# ------------------------------------------------------------------------- pyproject

def test_pyproject_extras():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(meta["dependencies"])
    extras = meta["optional-dependencies"]
    assert "pylibjpeg-libjpeg" not in core and "webdataset" not in core  # GPL / train only
    assert any(d.startswith("pylibjpeg-libjpeg") for d in extras["gpl"])
    assert any(d.startswith("imagecodecs") for d in extras["fast"])
    train = " ".join(extras["train"])
    assert "webdataset" in train and "torch>=2.3" in train  # torch.amp.GradScaler(device)
    # make test installs every extra the tests compare against
    assert "'.[fast,gpl,train,dask,dev]'" in (REPO / "Makefile").read_text()


# ------------------------------------------------------------------------ decoding

def test_jpeg_lossless_decodes_without_the_gpl_codec(tmp_path):
    """With imagecodecs (extra fast) and no pylibjpeg-libjpeg: libjpeg-turbo decodes JPEG
    lossless with the golden pixel values of tests/prep/test_dicomio.py."""
    if not _installed("imagecodecs"):
        pytest.skip("imagecodecs (extra fast) not installed")
    res = run_without(GPL, READ, [real(GE)], tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["libjpeg-turbo", "3062", "2394", "3471", "2197", "0", "2309"]


def test_jpeg_baseline_decodes_without_the_gpl_codec(tmp_path):
    """Lossy JPEG goes through pydicom's Pillow plug-in when pylibjpeg-libjpeg is absent."""
    code = ("import sys; from mammoprep.io.dicom import read_dicom; r = read_dicom(sys.argv[1]); "
            "print(r.meta['decoder'], *r.pixels.shape, r.meta['inverted'])")
    res = run_without(GPL + FAST, code, [real(BASELINE)], tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["pydicom", "2446", "2010", "True"]


def test_jpeg_lossless_without_any_decoder_names_what_to_install(tmp_path):
    res = run_without(GPL + FAST, MAMMOPREP, ["inspect", real(GE)], tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 1
    assert "Traceback" not in out
    assert "no installed decoder" in out and "(0002,0010)" in out and "1.2.840.10008.1.2.4.70" in out
    assert "pip install 'mammoprep[gpl]'" in out and "pip install 'mammoprep[fast]'" in out


# ---------------------------------------------------------------- synth, plain install

def test_synth_with_the_plain_install_falls_back_and_says_so(tmp_path):
    """No fast/gpl/train extras: JPEG-LS vendors are written as JPEG 2000 lossless, the
    command says so, labels.csv records what was written, and every file decodes."""
    hidden = GPL + FAST + TRAIN
    out = tmp_path / "cohort"
    res = run_without(hidden, MAMMOPREP,
                      ["synth", out, "--patients", 8, "--size", "128x104"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "JPEG-LS" in res.stderr and "instead" in res.stderr
    assert "pip install 'mammoprep[fast]'" in res.stderr
    rows = list(csv.DictReader(open(out / "labels.csv", encoding="utf-8")))
    by_vendor = Counter((r["vendor"], r["transfer_syntax"]) for r in rows)
    assert by_vendor[("metaltronica", J2K)] > 0  # the JPEG-LS vendor (see synth.VENDORS)
    assert not any(r["transfer_syntax"] == JLS for r in rows)
    for r in rows:  # the file says what labels.csv says
        ds = pydicom.dcmread(out / r["path"], stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == r["transfer_syntax"], r["path"]
    # and the same plain install decodes all of them
    res = run_without(hidden, MAMMOPREP, ["inspect", out], tmp_path / "again")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert f"{len(rows)} ok, 0 failed" in res.stdout + res.stderr


def test_synth_with_fast_extra_writes_jpeg_ls(tmp_path):
    """The fallback is only a fallback: with pyjpegls the vendor's JPEG-LS is written."""
    if not _installed("pyjpegls"):
        pytest.skip("pyjpegls (extra fast) not installed")
    from mammoprep.synth import encodable_syntax

    assert encodable_syntax(JLS) == JLS and encodable_syntax(J2K) == J2K


# ------------------------------------------------------------------------ mammotrain

def test_mammotrain_without_the_train_extra_names_the_extra(tmp_path):
    res = run_without(TRAIN, MAMMOTRAIN,
                      ["cv", "--task", "diagnosis", "--shards", tmp_path, "-o", tmp_path / "r"],
                      tmp_path)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and "ModuleNotFoundError" not in res.stderr
    assert "pip install 'mammoprep[train]'" in res.stderr
    assert "torch" in res.stderr and "webdataset" in res.stderr
    help_ = run_without(TRAIN, MAMMOTRAIN, ["--help"], tmp_path / "help")
    assert help_.returncode == 0 and "predict" in help_.stdout
