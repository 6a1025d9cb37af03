"""Two-view loading speed: mammoprep shards + mammotrain stream vs the LUMINA loader pattern.

    .venv/bin/python benchmarks/loader.py [--patients 4 --full-size 2048x1664 --size 512]

Builds its own data in a temporary folder: ``mammoprep synth --size FULL`` (full-resolution
DICOMs), ``mammoprep shard --size SIZE`` (breast-cropped 16-bit PNGs in tars), and one
full-resolution 16-bit PNG per DICOM (decoded with :func:`mammoprep.io.dicom.read_dicom`,
saved with Pillow), i.e. the files a LUMINA-style loader opens. Then times, in one process
with one thread ("per worker"), two-view samples (CC + MLO of a breast -> float32
``[2, 1, SIZE, SIZE]`` in [0, 1], random flip; channel replication and ImageNet
normalisation happen on the device in both cases):

* shards: :class:`mammotrain.stream.ShardStream` (webdataset tar -> PNG decode -> resize);
* LUMINA: for each breast, ``PIL.Image.open`` both full-resolution PNGs, convert to float,
  resize to SIZE x SIZE per sample (the same resize code as the stream).

Prints samples/s of both and the ratio.

``--part read`` (or ``all``) measures the read volume of distributed training instead:
``mammoprep synth`` + ``shard`` of ``--read-patients`` patients at ``--read-per-shard``
breasts per shard, then for world size 1, 2 and 4 each rank's :class:`ShardStream` runs one
training epoch in this process (ranks simulated, no workers) and counts the bytes it reads
from the tars (``ShardStream.bytes_read``): dealing examples one by one (the old way,
``distribute='examples'``) vs splitting shards (``'shards'``, now). Also prints the examples
padded or cut per epoch to give every rank the same steps, averaged over 20 epochs, for the
greedy count-balanced split used and for webdataset's ``split_by_node`` order (rank r takes
shards r, r + W, ... of the shuffled list).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent


def sh(*args: str) -> None:
    env = {**os.environ, "MAMMOPREP_SALT": os.environ.get("MAMMOPREP_SALT", "bench-salt-not-secret")}
    exe = BIN / "mammoprep"
    r = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env)
    if r.returncode:
        sys.exit(f"mammoprep {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")


def build(tmp: Path, patients: int, full: str, size: int, jobs: int) -> tuple[Path, list]:
    """Shards and full-resolution PNG pairs of the same breasts."""
    from PIL import Image

    from mammoprep.io.dicom import read_dicom

    cohort, shards, pngs = tmp / "cohort", tmp / "shards", tmp / "png"
    t = time.perf_counter()
    sh("synth", str(cohort), "--patients", str(patients), "--size", full, "--seed", "0",
       "-j", str(jobs))
    sh("shard", str(cohort), "-o", str(shards), "--labels", f"lumina:{cohort}", "--size",
       str(size), "--allow-rejects", "--folds", "0", "-j", str(jobs))
    pairs = []
    for group in ("Benign", "Malign"):
        for pdir in sorted((cohort / group).glob("*")):
            for lat in ("L", "R"):
                files = [pdir / f"{lat}_{v}.dcm" for v in ("CC", "MLO")]
                if not all(f.exists() for f in files):
                    continue
                out = []
                for f in files:
                    dst = pngs / group / pdir.name / f"{f.stem}.png"
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(read_dicom(f).pixels).save(dst)  # 16-bit, mode I;16
                    out.append((dst, None))
                pairs.append(out)
    print(f"data: {len(pairs)} breasts, full-resolution {full} PNGs and {size}px shards "
          f"built in {time.perf_counter() - t:.1f} s ({tmp})")
    return shards, pairs


def shard_loader(shards: Path, size: int):
    from mammotrain.data import Example, read_manifest
    from mammotrain.preprocess import Preprocess
    from mammotrain.stream import ShardStream

    rows = read_manifest(shards)
    by_key: dict[str, dict] = {}
    for r in rows:
        by_key.setdefault(r["key"], {})[r["view"]] = r
    ex = [Example(k, k, ("cc", "mlo"), 0, v["cc"]["patient"], 0, v["cc"]["shard"])
          for k, v in sorted(by_key.items()) if {"cc", "mlo"} <= set(v)]
    return ShardStream(shards, ex, Preprocess(size), train=True, seed=0)


def _waste(counts: list[int], world: int) -> int:
    """Examples padded or cut per epoch to bring rank totals ``counts`` to ``ceil(N / W)``."""
    share = -(-sum(counts) // world)
    return sum(abs(c - share) for c in counts)


def read_volume(root: Path, patients: int, per_shard: int, jobs: int,
                worlds: tuple[int, ...] = (1, 2, 4), epochs: int = 20) -> None:
    """Bytes read per rank in one training epoch, ranks simulated in this process."""
    from collections import Counter

    from mammotrain.data import plan_examples, read_manifest, split_examples
    from mammotrain.preprocess import Preprocess
    from mammotrain.stream import ShardStream
    from mammotrain.tasks import get_task

    cohort, shards = root / "read-cohort", root / "read-shards"
    t = time.perf_counter()
    if not (shards / "images.parquet").exists():
        sh("synth", str(cohort), "--patients", str(patients), "--size", "512x416", "--seed", "0",
           "-j", str(jobs))
        sh("shard", str(cohort), "-o", str(shards), "--labels", f"lumina:{cohort}", "--size",
           "128", "--samples-per-shard", str(per_shard), "--allow-rejects", "--folds", "5",
           "-j", str(jobs))
    # the training split of test fold 0 (diagnosis, two-view): uneven examples per shard
    planned, _ = plan_examples(read_manifest(shards), get_task("diagnosis"), 2)
    ex = split_examples(planned, 0, 0.2, 0).train
    prep = Preprocess(32)
    size = {s: (shards / s).stat().st_size for s in {e.shard for e in ex}}
    total = sum(size.values())
    print(f"\nread volume: {len(ex)} two-view training examples (diagnosis, test fold 0) "
          f"in {len(size)} shards of {per_shard} breasts, {total / 1e6:.2f} MB (built/found in "
          f"{time.perf_counter() - t:.1f} s, {shards})")
    print("  world | split    | MB read per rank              | total / data set | "
          "steps equal | padded+cut per epoch (split_by_node order)")
    for world in worlds:
        for how in ("examples", "shards"):
            per_rank, yielded = [], []
            for r in range(world):
                s = ShardStream(shards, ex, prep, train=True, seed=0, rank=r, world=world,
                                distribute=how)
                yielded.append(sum(1 for _ in s))
                per_rank.append(sum(s.bytes_read.values()))
            waste = ""
            if how == "shards":  # per epoch: our balanced split vs split_by_node's r::W
                ours, rr = [], []
                for e in range(epochs):
                    plans = []
                    for r in range(world):
                        s = ShardStream(shards, ex, prep, train=True, seed=0, rank=r,
                                        world=world)
                        s.set_epoch(e)
                        plans.append(set(s.epoch_plan()[1]))
                    per = Counter(x.shard for x in ex)
                    ours.append(_waste([sum(per[sh] for sh in p) for p in plans], world))
                    order = sorted(per)
                    perm = np.random.default_rng([0, e, 13]).permutation(len(order))
                    order = [order[i] for i in perm]
                    rr.append(_waste([sum(per[sh] for sh in order[r::world])
                                      for r in range(world)], world))
                waste = f"{np.mean(ours):.1f} ({np.mean(rr):.1f})"
            mb = " ".join(f"{b / 1e6:6.2f}" for b in per_rank)
            print(f"  {world:5d} | {how:8s} | {mb:29s} | {sum(per_rank) / total:15.2f}x | "
                  f"{'yes' if len(set(yielded)) == 1 else 'NO':11s} | {waste}")


def lumina_samples(pairs: list, size: int, rng: np.random.Generator):
    """The LUMINA pattern: open both full-resolution PNGs with PIL, resize per sample."""
    import torch
    from PIL import Image

    from mammotrain.preprocess import resize_square, to_unit

    for pair in pairs:
        flip = rng.random() < 0.5
        image = torch.empty((len(pair), 1, size, size), dtype=torch.float32)
        for i, (path, _) in enumerate(pair):
            with Image.open(path) as im:
                px = np.asarray(im)
            img, _ = resize_square(to_unit(px, 16), size)
            image[i, 0] = img.flip(-1) if flip else img
        yield image


def rate(it, minimum_s: float) -> tuple[float, int]:
    """samples/s over whole passes of a re-creatable iterable (at least ``minimum_s``)."""
    n, t0 = 0, time.perf_counter()
    while True:
        for x in it():
            assert x.shape[0] == 2
            n += 1
        dt = time.perf_counter() - t0
        if dt >= minimum_s:
            return n / dt, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=4)
    ap.add_argument("--full-size", default="2048x1664", help="ROWSxCOLS of the DICOMs/PNGs")
    ap.add_argument("--size", type=int, default=512, help="model input and shard size")
    ap.add_argument("--seconds", type=float, default=5.0, help="minimum timing per loader")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="build/keep the data here")
    ap.add_argument("--part", choices=("speed", "read", "all"), default="speed",
                    help="speed: shards vs LUMINA samples/s; read: bytes read per rank for "
                         "world size 1, 2, 4")
    ap.add_argument("--read-patients", type=int, default=64)
    ap.add_argument("--read-per-shard", type=int, default=8, help="breasts per shard")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)  # one worker = one core
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="loader-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    if args.part in ("read", "all"):
        read_volume(tmp, args.read_patients, args.read_per_shard, args.jobs)
        if args.part == "read":
            return
    shards, pairs = build(tmp, args.patients, args.full_size, args.size, args.jobs)
    stream = shard_loader(shards, args.size)
    epoch = [0]

    def shard_pass():
        stream.set_epoch(epoch[0])
        epoch[0] += 1
        return (s["image"] for s in stream)

    rng = np.random.default_rng(0)
    next(iter(shard_pass()))  # warm-up (imports, first allocation)
    shard_rate, n1 = rate(shard_pass, args.seconds)
    lumina_rate, n2 = rate(lambda: lumina_samples(pairs, args.size, rng), args.seconds)
    print(f"two-view samples at {args.size}x{args.size}, one worker (1 thread):")
    print(f"  shards (webdataset, {args.size}px PNG) : {shard_rate:8.1f} samples/s "
          f"({1000 / shard_rate:6.1f} ms/sample, {n1} samples)")
    print(f"  LUMINA (PIL full-res {args.full_size} PNG + resize): {lumina_rate:8.1f} samples/s "
          f"({1000 / lumina_rate:6.1f} ms/sample, {n2} samples)")
    print(f"  ratio: {shard_rate / lumina_rate:.1f}x (target >= 30x)")


if __name__ == "__main__":
    main()
