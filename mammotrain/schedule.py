"""lr schedules: name -> multiplier of the base lr in (0-based) epoch ``e`` of ``epochs``."""

from __future__ import annotations

import math
from functools import partial

import torch

#: lr schedules: name -> multiplier of the base lr in (0-based) epoch ``e`` of ``epochs``
SCHEDULES = ("step", "constant", "cosine")


def lr_factor(schedule: str, epoch: int, epochs: int, step_size: int = 30,
              gamma: float = 0.1, warmup: int = 0) -> float:
    """Multiplier of the base lr during 0-based ``epoch`` of a ``epochs``-epoch run.

    warmup: linear warm-up epochs first: epoch ``e < warmup`` gets ``(e + 1) / (warmup +
    1)``; the schedule then runs over the remaining ``epochs - warmup`` epochs from its start.
    step: ``gamma ** (epoch // step_size)``; constant: 1; cosine: ``(1 + cos(pi * epoch /
    epochs)) / 2`` (1 in the first epoch, approaching 0 in the last)."""
    if warmup > 0:
        if epoch < warmup:
            if schedule not in SCHEDULES:
                raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, "
                                 f"got {schedule!r}")
            return (epoch + 1) / (warmup + 1)
        return lr_factor(schedule, epoch - warmup, max(epochs - warmup, 1), step_size, gamma)
    if schedule == "step":
        return float(gamma ** (epoch // step_size))
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def build_scheduler(cfg: "TrainConfig", optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """The lr scheduler of a resolved config, stepped once per epoch (:func:`lr_factor`)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, cfg.schedule, epochs=cfg.epochs,
                           step_size=cfg.step_size, gamma=cfg.gamma,
                           warmup=cfg.warmup_epochs))

