"""DDP under torchrun: process-group setup, rank membership, gathering rank-local outputs.

Runs under ``torchrun`` use DDP (gloo on CPU, NCCL on GPU): each rank reads its own shards
(:class:`mammotrain.stream.ShardStream`) and validates its share of the validation shards;
rank 0 gathers the validation predictions (:func:`gather_predictions`), selects the epoch,
evaluates the test fold and writes.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch

@dataclass(frozen=True)
class Dist:
    """Process group membership (world = 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def init_distributed(device: str, timeout_min: float = 30.0) -> Dist:
    """Join the torchrun process group when ``WORLD_SIZE > 1`` (gloo on CPU, NCCL on CUDA).
    A collective that waits more than ``timeout_min`` minutes (a rank died or hangs) fails
    instead of blocking the others for ever."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(local)
        torch.distributed.init_process_group(backend, timeout=timedelta(minutes=timeout_min))
    return Dist(rank, world, local)


def merge_predictions(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`predict` outputs of disjoint example sets (one per rank) -> one output sorted
    by uid: per-example arrays and lists concatenated in that order, ``loss`` the mean over
    all examples. Raises ValueError when an example was predicted on two ranks."""
    uids = [u for p in parts for u in p["uid"]]
    twice = sorted(u for u, c in Counter(uids).items() if c > 1)
    if twice:
        raise ValueError(f"{len(twice)} examples predicted on more than one rank (e.g. "
                         f"{twice[0]}): the evaluation split was not partitioned")
    order = np.asarray(sorted(range(len(uids)), key=uids.__getitem__), dtype=np.int64)
    out: dict[str, Any] = {"uid": [uids[i] for i in order],
                           "loss": sum(p["loss"] * len(p["uid"]) for p in parts)
                           / max(len(uids), 1)}
    for k, v in parts[0].items():
        if isinstance(v, np.ndarray):
            out[k] = np.concatenate([p[k] for p in parts])[order]
        elif isinstance(v, list) and k != "uid":
            vals = [x for p in parts for x in p[k]]
            out[k] = [vals[i] for i in order]
    return out


def gather_predictions(pred: dict[str, Any], dist: Dist) -> dict[str, Any] | None:
    """Each rank's :func:`predict` output (its share of the examples) -> all of them on rank
    0 (one ``gather_object``, then :func:`merge_predictions`); other ranks get None."""
    if dist.world <= 1:
        return pred
    parts: list | None = [None] * dist.world if dist.main else None
    torch.distributed.gather_object(pred, parts, dst=0)
    return merge_predictions(parts) if dist.main else None


def rank_device(device: str, dist: Dist) -> torch.device:
    """The torch device of this rank for a resolved ``--device`` (CUDA: the local rank's)."""
    if device.startswith("cuda") and dist.world > 1:
        return torch.device("cuda", dist.local_rank)
    return torch.device(device)



def agree(flag: bool, dist: Dist, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (early stopping under DDP)."""
    if dist.world <= 1:
        return flag
    t = torch.tensor([int(flag)], device=device if device.type == "cuda" else "cpu")
    torch.distributed.broadcast(t, 0)
    return bool(t.item())
