"""The optimiser step of the training loop: gradient accumulation, AMP loss scaling, gradient
clipping, the EMA update; and ``torch.compile`` of the training forward.

With ``accum`` micro-batches per optimiser step, each micro-batch's loss is divided by the
number of micro-batches in its group before ``backward`` (the last group of an epoch may be
shorter: it is divided by its own length), so the accumulated gradient is the gradient of
the mean loss over the group, the same as one batch ``accum`` times larger when the loss is
a mean over examples (no BatchNorm or dropout differences aside). Under DDP the gradients are
all-reduced once per optimiser step (``no_sync`` on the other micro-batches).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import torch
from tqdm import tqdm


class OptimStep:
    """Backward + (every ``accum`` micro-batches) clip, optimiser step, EMA update.

    net: the module the loss was computed with (DDP-wrapped or not); model: the unwrapped
    module (its parameters are clipped, the EMA follows it); scaler: a
    ``torch.amp.GradScaler`` (disabled = plain backward); clip_grad: max global L2 norm of
    the true (unscaled) gradients, None = off; ema: a :class:`mammotrain.ema.ModelEma` or
    None; total: micro-batches in the epoch (for the size of the last group).
    """

    def __init__(self, net: torch.nn.Module, model: torch.nn.Module, optimizer, scaler, *,
                 accum: int = 1, clip_grad: float | None = None, ema: Any = None,
                 total: int | None = None):
        if accum < 1:
            raise ValueError(f"accum_steps must be >= 1, got {accum!r}")
        self.net, self.model, self.optimizer, self.scaler = net, model, optimizer, scaler
        self.accum, self.clip_grad, self.ema, self.total = int(accum), clip_grad, ema, total
        self.optimizer_steps = 0

    def group_size(self, i: int) -> int:
        """Micro-batches in the group of 0-based micro-batch ``i``."""
        if self.total is None:
            return self.accum
        start = (i // self.accum) * self.accum
        return max(1, min(self.accum, self.total - start))

    def is_last(self, i: int) -> bool:
        """Whether micro-batch ``i`` closes its group (the optimiser steps after it)."""
        return (i % self.accum) + 1 == self.group_size(i) or (
            self.total is not None and i + 1 >= self.total)

    def no_sync(self, i: int):
        """A context for micro-batch ``i``'s forward and backward: DDP's ``no_sync`` unless
        it closes its group (gradients are all-reduced once per optimiser step)."""
        if hasattr(self.net, "no_sync") and not self.is_last(i):
            return self.net.no_sync()
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, i: int) -> bool:
        """Backward of micro-batch ``i``'s loss (a mean over its examples); steps the
        optimiser when ``i`` closes its group. Returns whether it stepped."""
        if i % self.accum == 0:
            self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss / self.group_size(i)).backward()
        if not self.is_last(i):
            return False
        if self.clip_grad:  # global L2 norm of the true (unscaled) gradients
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer_steps += 1
        if self.ema is not None:
            self.ema.update(self.model)
        return True


def compile_model(net: torch.nn.Module, enabled: bool, log=None) -> torch.nn.Module:
    """``torch.compile(net)`` when ``enabled`` (the training forward; evaluation, EMA and
    checkpoints use the plain module, whose state dict keys are unchanged)."""
    if not enabled:
        return net
    if log is not None:
        log("torch.compile: the first steps are slow while the graph is compiled")
    return torch.compile(net)


def autocast(cfg, device: torch.device):
    """Mixed precision of a resolved config on CUDA (bf16 where supported), else off."""
    if cfg.amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


def progress(loader, main: bool, desc: str):
    """A tqdm bar over the loader's steps on an interactive stderr (rank 0 only); the plain
    iterable otherwise (logs and CI keep one line per epoch)."""
    if not (main and sys.stderr.isatty()):
        return loader
    return tqdm(loader, total=len(loader), desc=desc, unit="step", leave=False)
