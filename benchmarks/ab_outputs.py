"""Byte-level A/B of everything the two programs write, for a refactoring that must not change
behaviour.

    python benchmarks/ab_outputs.py run --tree A_CHECKOUT --out /tmp/ab_a
    python benchmarks/ab_outputs.py run --tree B_CHECKOUT --out /tmp/ab_b
    python benchmarks/ab_outputs.py compare /tmp/ab_a /tmp/ab_b

``run`` executes the code of ``--tree`` (put first on ``PYTHONPATH``; the interpreter is the
one running this script) on a seeded synthetic cohort and on every real file in
``../shared/testdata`` (beside the tree): ``synth``, ``qc``, ``reference``, ``harmonize``
(derived DICOMs and PNGs), ``preview``, ``shard`` (raw and harmonised, with LUMINA labels;
the real files without labels) and a seeded ``mammotrain cv`` (its JSON reports and
per-example predictions). It writes ``digests.txt``: one ``sha256  relative/path`` line per
output file, plus the exit code and stdout of every command (stderr holds progress bars and
timings, so it is not compared). ``compare`` prints the differing, missing and added files and
exits 1 when there is any.

Files whose bytes legitimately differ between two runs of the same code (timings, model
checkpoints with their creation time) are listed in :data:`VOLATILE` and left out; run the
same tree twice to see that the rest is deterministic.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

#: Output names whose bytes vary between two runs of the same code (matched on the name).
#: ``synth.txt``: the stdout of ``synth`` ends with its wall time ("... to cohort in 1.8 s");
#: ``history.csv`` / ``history.jsonl``: mammotrain's per-epoch rows hold the epoch's seconds.
#: Note: derived UIDs hash the configuration, which holds the absolute reference path, so
#: compare runs made at the same ``--out`` path (and a tree at the same place).
VOLATILE = ("train.log", "log.jsonl", "timing.json", ".pt", ".lock", "tfevents", "synth.txt",
            "history.csv", "history.jsonl")


def _cli(tree: Path, program: str, *args: str, out: Path, name: str) -> None:
    """Run ``program`` (mammoprep or mammotrain) of ``tree``; record exit code and stdout."""
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1",
           "MAMMOPREP_SALT": "ab-salt-not-secret", "NUMBA_CACHE_DIR": str(out / ".numba"),
           "OMP_NUM_THREADS": "1"}
    code = f"from {program}.cli import main; main()"
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                       text=True, cwd=out)
    (out / "commands").mkdir(exist_ok=True)
    (out / "commands" / f"{name}.txt").write_text(
        f"{program} {' '.join(args)}\nexit {r.returncode}\n{r.stdout}")
    print(f"{name}: exit {r.returncode}", flush=True)


def run(tree: Path, out: Path, patients: int) -> None:
    tree = tree.resolve()
    shared = (tree.parent / "shared" / "testdata").resolve()
    if not shared.exists():
        shared = Path(__file__).resolve().parents[2] / "shared" / "testdata"
    out.mkdir(parents=True, exist_ok=False)
    out = out.resolve()

    def prep(name, *args):
        _cli(tree, "mammoprep", *args, out=out, name=name)

    prep("synth", "synth", "cohort", "--patients", str(patients), "--seed", "0",
         "--artefacts", "0.25")
    prep("qc", "qc", "cohort", "-o", "qc.png", "--max", "48", "-j", "2")
    prep("reference", "reference", "cohort", "-o", "ref.npz")
    prep("harmonize", "harmonize", "--ref", "ref.npz", "cohort", "-o", "harm", "-j", "2")
    prep("harmonize_png", "harmonize", "--ref", "ref.npz", "cohort", "-o", "harm_png",
         "--format", "png", "-j", "2")
    first = sorted((out / "cohort").glob("*/*/L_CC.dcm"))[0]
    prep("preview", "preview", str(first), "--ref", "ref.npz", "-o", "preview.png")
    for name, extra in (("shard_raw", []), ("shard_harm", ["--ref", "ref.npz"])):
        prep(name, "shard", "cohort", "-o", name, "--labels", "lumina:cohort", "--size", "256",
             "--samples-per-shard", "8", "-j", "2", "--allow-rejects", *extra)
    real = [str(shared / d) for d in ("mammo_real", "dicom", "film")]
    prep("real_qc", "qc", *real, "-o", "real_qc.png", "-j", "2")
    prep("real_reference", "reference", *real, "-o", "real_ref.npz", "--energy", "any")
    prep("real_harmonize", "harmonize", "--ref", "real_ref.npz", *real, "-o", "real_harm",
         "-j", "2")
    prep("real_shard", "shard", *real, "-o", "real_shard", "--size", "512", "-j", "2",
         "--allow-rejects", "--ref", "real_ref.npz")
    _cli(tree, "mammotrain", "cv", "--task", "diagnosis", "--views", "2", "--shards",
         "shard_harm", "--out", "train", "--backbone", "test_resnet", "--size", "32",
         "--epochs", "2", "--batch-size", "8", "--folds", "0,1", "--workers", "0",
         "--device", "cpu", "--seed", "0", out=out, name="cv")
    write_digests(out)


def write_digests(out: Path) -> None:
    lines = []
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = f.relative_to(out).as_posix()
        if rel.startswith(".numba") or rel == "digests.txt" or any(
                rel.endswith(v) or v in f.name for v in VOLATILE):
            continue
        lines.append(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {rel}")
    (out / "digests.txt").write_text("\n".join(lines) + "\n")
    print(f"{len(lines)} files digested -> {out / 'digests.txt'}")


def compare(a: Path, b: Path) -> int:
    def load(d):
        return dict(reversed(line.split("  ", 1)) for line in
                    (d / "digests.txt").read_text().splitlines() if line)

    da, db = load(a), load(b)
    differ = sorted(k for k in da.keys() & db.keys() if da[k] != db[k])
    missing, added = sorted(da.keys() - db.keys()), sorted(db.keys() - da.keys())
    for title, names in (("differ", differ), ("only in A", missing), ("only in B", added)):
        for n in names:
            print(f"{title}: {n}")
    same = len(da.keys() & db.keys()) - len(differ)
    print(f"{same} identical, {len(differ)} differ, {len(missing)} only in A, "
          f"{len(added)} only in B")
    return 1 if differ or missing or added else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--patients", type=int, default=8)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args()
    if args.cmd == "run":
        run(args.tree, args.out, args.patients)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
