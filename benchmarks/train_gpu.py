"""Training throughput: the model alone on synthetic tensors vs fed by ShardStream from shards.

    .venv/bin/python benchmarks/train_gpu.py                    # GPU: EfficientNet-B0, 512 px, batch 32
    .venv/bin/python benchmarks/train_gpu.py --tiny             # CPU smoke run (64 px, batch 4)
    .venv/bin/python benchmarks/train_gpu.py --ddp 2            # + two-process DDP scaling

Builds its own data in a temporary folder (``mammoprep synth`` + ``mammoprep shard --size
SIZE``: 16-bit PNG shards on local disk), then times optimiser steps of the two-view
classifier (``MultiViewClassifier``, shared backbone, AdamW, cross-entropy) with AMP
(bf16 where supported, else fp16 with a GradScaler) and channels_last on CUDA:

* model only: one batch ``[B, 2, 1, S, S]`` of random tensors already on the device;
* fed: batches from :class:`mammotrain.stream.EpochLoader` over :class:`ShardStream`
  (``--workers`` DataLoader workers, pinned memory, non-blocking copies), the trainer's path.

Prints images/s (two views = two images per example) of both and their ratio (target: the
fed rate >= 90 % of the model-only rate, i.e. the loader is not the bottleneck). With
``--ddp N`` (N GPUs, or N CPU processes with gloo), the model-only rate per process and in
total for N processes, and the scaling efficiency against one process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def sh(*args: str) -> None:
    env = {**os.environ, "MAMMOPREP_SALT": os.environ.get("MAMMOPREP_SALT", "bench-salt-not-secret")}
    exe = BIN / "mammoprep"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c",
                                           "from mammoprep.cli import main; main()"]
    r = subprocess.run(cmd + list(args), capture_output=True, text=True, env=env)
    if r.returncode:
        sys.exit(f"mammoprep {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")


def build_shards(tmp: Path, patients: int, size: int, jobs: int) -> Path:
    cohort, shards = tmp / "cohort", tmp / "shards"
    if not (shards / "images.parquet").exists():
        synth = f"{max(size * 2, 256)}x{max(size * 2, 256) * 13 // 16}"
        sh("synth", str(cohort), "--patients", str(patients), "--size", synth, "--seed", "0",
           "-j", str(jobs))
        sh("shard", str(cohort), "-o", str(shards), "--labels", f"lumina:{cohort}", "--size",
           str(size), "--allow-rejects", "--folds", "0", "-j", str(jobs))
    return shards


def two_view_examples(shards: Path):
    from mammotrain.data import Example, read_manifest

    by_key: dict[str, dict] = {}
    for r in read_manifest(shards):
        by_key.setdefault(r["key"], {})[r["view"]] = r
    return [Example(k, k, ("cc", "mlo"), int(k[-1] == "L"), v["cc"]["patient"], 0,
                    v["cc"]["shard"]) for k, v in sorted(by_key.items())
            if {"cc", "mlo"} <= set(v)]


class Step:
    """One optimiser step of the two-view classifier with the trainer's AMP settings."""

    def __init__(self, backbone: str, size: int, device, amp: bool, net=None):
        import torch

        from mammotrain.models import build_model

        self.torch, self.device = torch, device
        model, _ = build_model(backbone, 2, views=2, img_size=size)
        model.to(device)
        if device.type == "cuda":
            model.to(memory_format=torch.channels_last)
            model.channels_last = True
        self.model = model
        self.net = net(model) if net else model
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.amp = amp and device.type == "cuda"
        bf16 = self.amp and torch.cuda.is_bf16_supported()
        self.dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp and not bf16)

    def __call__(self, x, y) -> None:
        torch = self.torch
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.amp):
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


def model_only(step: Step, batch: int, size: int, steps: int, warmup: int) -> float:
    """images/s of ``steps`` optimiser steps on one random batch kept on the device."""
    torch = step.torch
    x = torch.rand(batch, 2, 1, size, size, device=step.device)
    y = torch.randint(0, 2, (batch,), device=step.device)
    for _ in range(warmup):
        step(x, y)
    step.sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    step.sync()
    return 2 * batch * steps / (time.perf_counter() - t0)


def fed(step: Step, shards: Path, batch: int, size: int, steps: int, warmup: int,
        workers: int) -> float:
    """images/s of optimiser steps on batches streamed from the shards (trainer's loader)."""
    from mammotrain.preprocess import Preprocess
    from mammotrain.stream import EpochLoader, ShardStream

    stream = ShardStream(shards, two_view_examples(shards), Preprocess(size), train=True,
                         seed=0, shuffle_buffer=64)
    loader = EpochLoader(stream, batch, workers=workers,
                         pin_memory=step.device.type == "cuda")

    def batches():
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            epoch += 1
            yield from loader

    it = batches()
    for _ in range(warmup):  # also starts the workers
        b = next(it)
        step(b["image"].to(step.device, non_blocking=True),
             (b["label"] % 2).to(step.device, non_blocking=True))
    step.sync()
    t0, n = time.perf_counter(), 0
    for _ in range(steps):
        b = next(it)
        step(b["image"].to(step.device, non_blocking=True),
             (b["label"] % 2).to(step.device, non_blocking=True))
        n += 2 * len(b["label"])
    step.sync()
    return n / (time.perf_counter() - t0)


def _ddp_worker(rank: int, world: int, args, port: int, out) -> None:
    import torch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = args.device.startswith("cuda")
    torch.distributed.init_process_group("nccl" if cuda else "gloo", rank=rank,
                                         world_size=world)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    ddp = torch.nn.parallel.DistributedDataParallel
    step = Step(args.backbone, args.size, device, args.amp,
                net=lambda m: ddp(m, device_ids=[rank] if cuda else None))
    rate = model_only(step, args.batch, args.size, args.steps, args.warmup)
    out.put((rank, rate))
    torch.distributed.destroy_process_group()


def ddp_rates(args, world: int) -> list[float]:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    mp.start_processes(_ddp_worker, args=(world, args, port, q), nprocs=world, join=True,
                       start_method="spawn")
    return [r for _, r in sorted(q.get() for _ in range(world))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="efficientnet_b0")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50, help="timed optimiser steps")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--patients", type=int, default=48, help="synthetic patients in the shards")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-amp", dest="amp", action="store_false")
    ap.add_argument("--ddp", type=int, default=0, help="also time N-process DDP (model only)")
    ap.add_argument("--tiny", action="store_true",
                    help="CPU smoke settings: 64 px, batch 4, 3 steps, 6 patients, 1 worker")
    ap.add_argument("--keep", type=Path, default=None, help="build/keep the shards here")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    if args.tiny:
        args.size, args.batch, args.steps, args.warmup = 64, 4, 3, 1
        args.patients, args.workers = 6, 1

    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}, {torch.cuda.device_count()} GPU(s)")
    else:
        print(f"device: CPU ({os.cpu_count()} cores); GPU figures need a CUDA machine")
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="train-gpu-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        run(args, device, tmp)
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args, device, tmp: Path) -> None:
    import torch

    t = time.perf_counter()
    shards = build_shards(tmp, args.patients, args.size, args.jobs)
    print(f"shards: {len(two_view_examples(shards))} two-view breasts at {args.size} px in "
          f"{shards} ({time.perf_counter() - t:.1f} s)")

    step = Step(args.backbone, args.size, device, args.amp)
    amp = f"AMP {str(step.dtype).split('.')[-1]}" if step.amp else "fp32"
    print(f"{args.backbone}, two views, {args.size}x{args.size}, batch {args.batch}, {amp}"
          f"{', channels_last' if device.type == 'cuda' else ''}, {args.steps} timed steps")
    alone = model_only(step, args.batch, args.size, args.steps, args.warmup)
    streamed = fed(step, shards, args.batch, args.size, args.steps, args.warmup, args.workers)
    print(f"  model only (synthetic tensors on {device.type}): {alone:9.1f} images/s")
    print(f"  fed by ShardStream ({args.workers} workers)    : {streamed:9.1f} images/s")
    print(f"  ratio fed / model only: {streamed / alone:.2f} (target >= 0.90)")
    if args.ddp > 1:
        n_gpu = torch.cuda.device_count() if device.type == "cuda" else args.ddp
        if n_gpu < args.ddp:
            print(f"  DDP x{args.ddp}: not measured ({n_gpu} GPU(s))")
            return
        del step
        single = ddp_rates(args, 1)[0]
        rates = ddp_rates(args, args.ddp)
        print(f"  DDP x1: {single:9.1f} images/s; x{args.ddp}: {sum(rates):9.1f} images/s "
              f"in total ({', '.join(f'{r:.1f}' for r in rates)} per process), scaling "
              f"efficiency {sum(rates) / (args.ddp * single):.2f}")


if __name__ == "__main__":
    main()
