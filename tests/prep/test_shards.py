"""`mammoprep shard` / `verify` end to end on a synthetic cohort: real tars read back by
webdataset and tarfile+PIL, real Parquet, reproducibility, resume, rejects, no identity leak."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from mammoprep.cli import main
from mammoprep.identity import resolve_salt
from mammoprep.pipeline import PrepConfig
from mammoprep.shards.schema import ShardConfig
from mammoprep.shards.write import build_shards
from mammoprep.shards.verify import verify

SALT = b"shard-test-salt-not-secret"


COHORT = dict(patients=10, seed=11, size=(192, 160))  # the `cohort` fixture (conftest.py)


@pytest.fixture(scope="module")
def reference(cohort, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ref") / "ref.npz"
    r = CliRunner().invoke(main, ["reference", str(cohort), "-o", str(path)])
    assert r.exit_code == 0, r.output
    return path


def _cfg(cohort, reference=None, **kw) -> ShardConfig:
    return ShardConfig(prep=PrepConfig(reference=str(reference) if reference else None,
                                       size=kw.pop("size", 96)),
                       labels=kw.pop("labels", f"lumina:{cohort}"),
                       samples_per_shard=kw.pop("samples_per_shard", 4), **kw)


@pytest.fixture(scope="module")
def shards(cohort, reference, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    summary = build_shards([str(cohort)], out, _cfg(cohort, reference), SALT)
    assert summary["rejected"] == 0 and summary["images"] > 30
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_verify_ok_and_manifests_consistent(shards):
    assert verify(shards) == []
    images = pq.read_table(shards / "images.parquet").to_pylist()
    listed = pq.read_table(shards / "shards.parquet").to_pylist()
    assert sum(s["images"] for s in listed) == len(images)
    assert all("." not in r["key"] for r in images)
    meta = json.loads(pq.read_schema(shards / "images.parquet").metadata[b"mammoprep"])
    assert meta["config"]["samples_per_shard"] == 4 and meta["mammoprep_version"]
    assert all(r["harmonized"] for r in images)


def test_read_back_with_webdataset(shards):
    import webdataset as wds

    from mammoprep.io.png import decode_png16

    def decode16(key, data):
        return decode_png16(data) if key.endswith(".png") else None

    urls = sorted(str(p) for p in shards.glob("shard-*.tar"))
    ds = wds.WebDataset(urls, shardshuffle=False).decode(decode16)  # json: built-in
    n = 0
    for sample in ds:
        meta = sample["json"]
        for v in meta["views"]:
            img = sample[f"{v}.png"]
            assert img.dtype == np.uint16 and img.ndim == 2 and max(img.shape) == 96
            assert meta["transform"][v]["stored_size"] == list(img.shape)
        n += 1
    assert n == sum(pq.read_table(shards / "shards.parquet").column("samples").to_pylist())


def test_read_back_with_tarfile_and_pil(shards):
    from PIL import Image

    first = sorted(shards.glob("shard-*.tar"))[0]
    with tarfile.open(first) as tar:
        names = tar.getnames()
        assert names == sorted(names)
        assert all(m.mtime == 946684800 for m in tar.getmembers())
        png = next(n for n in names if n.endswith(".png"))
        with Image.open(io.BytesIO(tar.extractfile(png).read())) as im:
            assert im.mode == "I;16"


def test_folds_are_patient_level(shards):
    images = pq.read_table(shards / "images.parquet").to_pylist()
    folds: dict[str, set] = {}
    for r in images:
        folds.setdefault(r["patient"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in folds.values())
    assert len({f for s in folds.values() for f in s}) == 5


def test_byte_identical_rerun_and_resume_after_crash(cohort, reference, shards, tmp_path):
    out = tmp_path / "again"
    cfg = _cfg(cohort, reference)
    build_shards([str(cohort)], out, cfg, SALT)
    names = sorted(p.name for p in shards.glob("shard-*.tar"))
    assert names == sorted(p.name for p in out.glob("shard-*.tar"))
    for n in names:
        assert _sha(out / n) == _sha(shards / n)
    # simulate a crash: one shard gone, one half-written temporary, one part file lost
    (out / names[0]).unlink()
    (out / ".parts" / f"{names[0]}.json").unlink()
    (out / f"{names[1]}.tmp").write_bytes(b"partial")
    (out / ".parts" / f"{names[2]}.json").unlink()
    before = (out / names[-1]).stat().st_mtime_ns
    build_shards([str(cohort)], out, cfg, SALT)
    assert (out / names[-1]).stat().st_mtime_ns == before  # finished shard skipped
    for n in names:
        assert _sha(out / n) == _sha(shards / n)
    for m in ("images.parquet", "shards.parquet"):
        a = pq.read_table(out / m).to_pylist()
        b = pq.read_table(shards / m).to_pylist()
        assert a == b


def test_other_options_refuse_existing_folder(cohort, shards):
    from mammoprep.errors import MammoprepError

    with pytest.raises(MammoprepError) as exc:
        build_shards([str(cohort)], shards, _cfg(cohort, size=64), SALT)
    assert "--overwrite" in str(exc.value)


def test_no_patient_identity_anywhere(cohort, shards):
    """Every byte of shards and manifests: no name, birth date, accession or raw patient id."""
    with open(cohort / "identities.csv") as fh:
        ids = list(csv.DictReader(fh))
    needles = set()
    for row in ids:
        for k in ("patient_name", "patient_id", "birth_date", "accession_number"):
            if row[k]:
                needles.add(row[k].encode())
                needles.add(row[k].replace("^", " ").encode())
    blobs = [p.read_bytes() for p in shards.rglob("*") if p.is_file()]
    for tar_path in shards.glob("shard-*.tar"):  # and inside each member, decompressed
        with tarfile.open(tar_path) as tar:
            blobs += [tar.extractfile(m).read() for m in tar.getmembers()]
    for needle in needles:
        assert not any(needle in b for b in blobs), needle


def test_bad_file_is_rejected_and_the_rest_stored(cohort, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(cohort, src)
    bad = next((src / "Benign").rglob("*.dcm"))
    bad.write_bytes(bad.read_bytes()[:2000])  # truncated
    (src / "Benign" / "notes.dcm").write_text("not a dicom")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["shard", str(src), "-o", str(out), "--labels",
                                  f"lumina:{src}", "--size", "64", "-j", "1"])
    assert r.exit_code == 1, r.output
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    paths = {Path(x["path"]).name for x in rejects}
    assert bad.name in paths and "notes.dcm" in paths
    assert all(x["message"] and x["reason"] for x in rejects)
    n_in = len(list(cohort.rglob("*.dcm")))
    assert len(pq.read_table(out / "images.parquet")) == n_in - 1
    assert verify(out) == []
    r = CliRunner().invoke(main, ["shard", str(src), "-o", str(out), "--labels",
                                  f"lumina:{src}", "--size", "64", "-j", "1", "--allow-rejects"])
    assert r.exit_code == 0, r.output


def test_boxes_follow_crop_and_resize(cohort, tmp_path):
    """Generic labels (synth's labels.csv) carry boxes; in the shard they still enclose
    the lesion, which is brighter than the tissue around it."""
    from mammoprep.io.png import decode_png16

    out = tmp_path / "boxes"
    build_shards([str(cohort)], out, _cfg(cohort, labels=f"csv:{cohort / 'labels.csv'}",
                                          size=128, folds=0), SALT)
    rows = [r for r in pq.read_table(out / "images.parquet").to_pylist() if r["boxes"]]
    assert rows
    for r in rows:
        with tarfile.open(out / r["shard"]) as tar:
            img = decode_png16(tar.extractfile(f"{r['key']}.{r['view']}.png").read())
        for x0, y0, x1, y1 in r["boxes"]:
            assert 0 <= x0 < x1 <= img.shape[1] and 0 <= y0 < y1 <= img.shape[0]
            inner = img[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))]
            assert inner.size and inner.max() > 0  # inside the breast


def test_verify_detects_tampering(shards, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    victim = sorted(copy.glob("shard-*.tar"))[0]
    data = bytearray(victim.read_bytes())
    data[700] ^= 0xFF
    victim.write_bytes(bytes(data))
    r = CliRunner().invoke(main, ["verify", str(copy)])
    assert r.exit_code == 1 and "sha256" in r.output


def test_dask_local_cluster_gives_the_same_shards(cohort, reference, shards, tmp_path):
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "dask"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        r = CliRunner().invoke(main, [
            "shard", str(cohort), "-o", str(out), "--labels", f"lumina:{cohort}", "--ref",
            str(reference), "--size", "96", "--samples-per-shard", "4",
            "--scheduler", cluster.scheduler_address, "--salt", SALT.decode()])
    assert r.exit_code == 0, r.output
    for p in shards.glob("shard-*.tar"):
        assert _sha(out / p.name) == _sha(p)
