"""The read-back checks of the training shards (``train_shards``, built once per session by
the real `mammoprep` commands in ``tests/conftest.py``) through mammotrain's webdataset
stream."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ..conftest import mammoprep

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MAMMOPREP_SALT", "test-salt-not-secret")

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
