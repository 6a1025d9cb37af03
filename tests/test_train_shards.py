"""Shard fixtures for the mammotrain tests, made with the real `mammoprep` commands, and the
read-back checks of those shards through mammotrain's webdataset stream.

Other ``test_train_*`` modules import the fixtures from here; the shards are built once per
process (module-level cache), so a pytest session (or each xdist worker) builds them once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MAMMOPREP_SALT", "test-salt-not-secret")

BIN = Path(sys.executable).parent
_CACHE: dict[str, Path] = {}


def mammoprep(*args: str) -> None:
    """Run the real ``mammoprep`` command; fail with its output if it fails."""
    exe = BIN / "mammoprep"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mammoprep.cli"]
    env = {**os.environ, "MAMMOPREP_SALT": "test-salt-not-secret", "NUMBA_NUM_THREADS": "1"}
    r = subprocess.run(cmd + list(args), capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"mammoprep {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"


def build(root: Path, name: str, patients: int, seed: int, size: int, folds: int = 5,
          per_shard: int = 8, harmonized: bool = False, synth_size: str = "512x416",
          labels: str = "lumina") -> Path:
    """``mammoprep synth`` + (``reference``) + ``shard``; cached per process by ``name``.
    The cohort is shared by every build with the same ``(patients, seed)``. ``labels``:
    'lumina' (the spreadsheets: no boxes) or 'csv' (synth's flat table, with boxes)."""
    if name in _CACHE:
        return _CACHE[name]
    cohort = root / f"cohort-{patients}-{seed}-{synth_size}"
    out = root / name
    if not (out / "images.parquet").exists():
        if not cohort.exists():
            mammoprep("synth", str(cohort), "--patients", str(patients), "--seed", str(seed),
                      "--size", synth_size, "-j", "2")
        extra = []
        if harmonized:  # reference pooled from the cohort's low-energy images
            mammoprep("reference", str(cohort), "-o", str(root / f"{name}-ref.npz"))
            extra = ["--ref", str(root / f"{name}-ref.npz")]
        spec = f"lumina:{cohort}" if labels == "lumina" else f"csv:{cohort / 'labels.csv'}"
        mammoprep("shard", str(cohort), "-o", str(out), "--labels", spec,
                  "--size", str(size), "--samples-per-shard", str(per_shard), "--folds",
                  str(folds), "--allow-rejects", "-j", "2", *extra)
    _CACHE[name] = out
    return out


@pytest.fixture(scope="session")
def train_shards(tmp_path_factory) -> Path:
    """24 synthetic patients, raw (no harmonisation), longer side 128, 5 folds, 8 per shard."""
    return build(tmp_path_factory.getbasetemp(), "train-shards", 24, 0, 128)


@pytest.fixture(scope="session")
def train_shards_harmonized(tmp_path_factory, train_shards) -> Path:
    """The same cohort, harmonised to its own low-energy reference (``mammoprep reference``)."""
    return build(tmp_path_factory.getbasetemp(), "train-shards-harmonized", 24, 0, 128,
                 harmonized=True)


# ------------------------------------------------------------------ read-back checks

def test_shards_are_read_back_by_webdataset(train_shards):
    import webdataset as wds

    from mammotrain.data import read_manifest

    rows = read_manifest(train_shards)
    tars = sorted(str(p) for p in train_shards.glob("shard-*.tar"))
    seen = {}
    for s in wds.DataPipeline(wds.SimpleShardList(tars), wds.tarfile_to_samples()):
        seen[s["__key__"]] = s
    assert {r["key"] for r in rows} == set(seen)
    for r in rows[:6]:
        assert f"{r['view']}.png" in seen[r["key"]]


def test_stream_decodes_what_the_manifest_lists(train_shards):
    from mammoprep.io.png import decode_png16

    from mammotrain.data import plan_examples, read_manifest
    from mammotrain.preprocess import Preprocess
    from mammotrain.stream import EpochLoader, ShardStream
    from mammotrain.tasks import get_task

    rows = read_manifest(train_shards)
    ex, rep = plan_examples(rows, get_task("density"), 1)
    stream = ShardStream(train_shards, ex, Preprocess(32), train=False)
    batches = list(EpochLoader(stream, 16, workers=0))
    uids = [u for b in batches for u in b["uid"]]
    assert sorted(uids) == sorted(e.uid for e in ex)
    b = batches[0]
    assert b["image"].shape == (len(b["uid"]), 1, 1, 32, 32)
    assert b["image"].min() >= 0 and b["image"].max() <= 1
    assert b["image"].dtype.is_floating_point and np.isfinite(b["image"].numpy()).all()
    # labels are the manifest's
    by_uid = {e.uid: e.label for e in ex}
    assert [by_uid[u] for u in b["uid"]] == b["label"].tolist()
    # a stored PNG decodes to the manifest's stored size
    import tarfile
    r = rows[0]
    with tarfile.open(train_shards / r["shard"]) as tar:
        px = decode_png16(tar.extractfile(f"{r['key']}.{r['view']}.png").read())
    assert px.shape == (r["stored_rows"], r["stored_cols"])


def test_values_above_bits_stored_are_not_clipped(train_shards, tmp_path):
    """A Rescale Slope of 4 puts the values of a 14-bit image up to 65532: `shard` records
    value_bits 16 (not bits_stored 14) and the loader divides by 2^16 - 1, so the image reads
    back as the unscaled original does instead of saturating at 1.0 above a quarter of its
    range."""
    import shutil

    import pydicom
    import pyarrow.parquet as pq

    from mammotrain.data import plan_examples, read_manifest
    from mammotrain.preprocess import Preprocess
    from mammotrain.stream import EpochLoader, ShardStream
    from mammotrain.tasks import get_task

    cohort = next(train_shards.parent.glob("cohort-24-0-*"))
    orig, scaled = tmp_path / "orig", tmp_path / "scaled"
    shutil.copytree(cohort / "Malign" / "M0001", orig)
    shutil.copytree(orig, scaled)
    for f in sorted(scaled.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        assert "ModalityLUTSequence" not in ds and float(ds.get("RescaleIntercept", 0)) == 0
        ds.RescaleSlope = 4 * float(ds.get("RescaleSlope", 1))
        ds.save_as(f)
    bits = int(pydicom.dcmread(next(scaled.glob("*.dcm"))).BitsStored)
    out = {}
    for name, src in (("orig", orig), ("scaled", scaled)):
        mammoprep("shard", str(src), "-o", str(tmp_path / f"{name}-shards"), "--size", "64",
                  "--folds", "0", "-j", "1")
        out[name] = tmp_path / f"{name}-shards"
    rows = pq.read_table(out["scaled"] / "images.parquet").to_pylist()
    assert {r["bits_stored"] for r in rows} == {bits}
    assert {r["value_bits"] for r in rows} == {bits + 2}
    assert {r["value_bits"] for r in read_manifest(out["orig"])} == {bits}

    def images(shards):
        ex, _ = plan_examples(read_manifest(shards), get_task("diagnosis"), 1, unlabeled=True)
        b = next(iter(EpochLoader(ShardStream(shards, ex, Preprocess(64), train=False), 8)))
        return dict(zip(b["uid"], b["image"][:, 0, 0].numpy()))

    a, b = images(out["orig"]), images(out["scaled"])
    assert sorted(a) == sorted(b) and len(a) == 4
    for uid in a:
        # clipping at 2^14 - 1 would read the scaled image as min(4 x, 1)
        assert (a[uid] > 0.3).any() and (b[uid] < 1.0).all()
        np.testing.assert_allclose(b[uid], a[uid], atol=2e-3)
