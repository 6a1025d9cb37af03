"""`reference`, `harmonize`, `qc` and `shard` on a real multi-process Dask cluster
(``--scheduler``) give what a local run gives, byte for byte; the salt travels with the
work (the workers' own environment has another one); relative paths are made absolute for
workers that run in another folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mammoprep.cli import main

distributed = pytest.importorskip("distributed")

COHORT = dict(patients=2, seed=21, size=(128, 104))  # the `cohort` fixture (conftest.py)
SALT = "cluster-test-salt-not-secret-0123"


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes of one thread, started once for the module, in the folder this
    test process is in now; their environment has a salt of its own, which must not be
    used."""
    with distributed.LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None,
            env={"MAMMOPREP_SALT": "the-workers-own-salt-never-used-0", "NUMBA_NUM_THREADS": "1"},
    ) as c:
        yield c.scheduler_address


def _run(*args: str) -> str:
    r = CliRunner().invoke(main, [*args, "--salt", SALT])
    assert r.exit_code == 0, r.output
    return r.stdout


def _digests(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip}


@pytest.fixture(scope="module")
def reference(cohort, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cref") / "local.npz"
    _run("reference", str(cohort), "-o", str(path))
    return path


def test_reference_on_the_cluster_is_the_local_one(cluster, cohort, reference, tmp_path):
    # a duplicate (same SOP Instance UID) is pooled once, as in this process
    src = tmp_path / "in"
    src.mkdir()
    files = sorted(cohort.rglob("*.dcm"))
    for i, f in enumerate(files):
        (src / f"{i:02d}.dcm").write_bytes(f.read_bytes())
    (src / "99.dcm").write_bytes(files[0].read_bytes())
    outs = {}
    for where, extra in (("local", []), ("cluster", ["--scheduler", cluster])):
        path = tmp_path / f"{where}.npz"
        r = CliRunner().invoke(main, ["reference", str(src), "-o", str(path), *extra,
                                      "--salt", SALT])
        assert r.exit_code == 0, r.output
        with np.load(path) as z:
            outs[where] = (r.stdout.replace(str(path), "REF"),
                           {k: z[k].tolist() for k in z.files})
    assert outs["cluster"] == outs["local"]
    assert "duplicate 1" in outs["local"][0]


def test_harmonize_on_the_cluster_writes_the_local_bytes(cluster, cohort, reference, tmp_path,
                                                         monkeypatch):
    local = tmp_path / "local"
    _run("harmonize", "--ref", str(reference), str(cohort), "-o", str(local), "-j", "1")
    # relative paths from another folder than the workers': they must still find the files
    monkeypatch.chdir(cohort.parent)
    remote = tmp_path / "remote"
    _run("harmonize", "--ref", str(reference), cohort.name, "-o", str(remote),
         "--scheduler", cluster)
    assert len(list(local.rglob("*.dcm"))) == len(list(cohort.rglob("*.dcm")))
    log = "harmonize_log.jsonl"
    assert _digests(remote, (log,)) == _digests(local, (log,))

    def rows(out: Path) -> list[dict]:
        got = [json.loads(x) for x in (out / log).read_text().splitlines()]
        for row in got:  # the same files, named from another folder
            row["input"] = str(Path(row["input"]).resolve())
            row["output"] = str(Path(row["output"]).relative_to(out))
        return got

    assert rows(remote) == rows(local)


def test_qc_on_the_cluster_draws_the_local_sheet(cluster, cohort, tmp_path):
    outs = {}
    for where, extra in (("local", ["-j", "1"]), ("cluster", ["--scheduler", cluster])):
        png = tmp_path / f"{where}.png"
        r = CliRunner().invoke(main, ["qc", str(cohort), "-o", str(png), *extra])
        outs[where] = (r.exit_code, r.stdout.replace(str(png), "SHEET"), r.stderr,
                       png.read_bytes())
    assert outs["cluster"] == outs["local"]
    assert outs["local"][3][:8] == b"\x89PNG\r\n\x1a\n"


def test_shard_on_the_cluster_writes_the_local_tars(cluster, cohort, reference, tmp_path):
    outs = {}
    for where, extra in (("local", ["-j", "1"]), ("cluster", ["--scheduler", cluster])):
        out = tmp_path / where
        _run("shard", str(cohort), "-o", str(out), "--labels", f"lumina:{cohort}", "--ref",
             str(reference), "--size", "64", "--samples-per-shard", "2", *extra)
        outs[where] = _digests(out, (".lock",))
    assert outs["cluster"] == outs["local"]
    assert sum(name.endswith(".tar") for name in outs["local"]) >= 2


def test_an_unreachable_scheduler_is_one_usage_error(cohort, tmp_path):
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        r = CliRunner().invoke(main, ["qc", str(cohort), "-o", str(tmp_path / "q.png"),
                                      "--scheduler", "tcp://127.0.0.1:9"])
    assert r.exit_code == 2, r.output
    assert "cannot reach the Dask scheduler" in r.output and "Traceback" not in r.output
