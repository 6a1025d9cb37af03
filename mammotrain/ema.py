"""Exponential moving average (EMA) of a model's weights, for evaluation and selection.

After every optimiser step ``ema = decay * ema + (1 - decay) * weights`` for every
parameter and floating buffer (BatchNorm statistics too); the average starts from the
weights the model has when :class:`ModelEma` is made (initial or pretrained weights), so
after ``k`` steps with weights ``p_1 .. p_k``::

    ema_k = decay**k * p_0 + sum_i (1 - decay) * decay**(k - i) * p_i

Built on ``torch.optim.swa_utils.AveragedModel`` (``get_ema_multi_avg_fn``). With
``--ema DECAY`` the trainer validates, selects and saves (``best.pt``, the model file) the
EMA weights; ``checkpoint.pt`` keeps both so a resumed run continues the same average.
Integer buffers (BatchNorm's ``num_batches_tracked``) are copied, not averaged.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class ModelEma(torch.nn.Module):
    """EMA copy of ``model`` (on the model's device). ``module``: the averaged model, used
    like the original (``module(x)``, ``module.state_dict()`` with the original's keys)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay),
                                      use_buffers=True)
        self.averaged.update_parameters(model)  # the first update copies: ema_0 = p_0
        self.averaged.eval()
        for p in self.averaged.parameters():
            p.requires_grad_(False)

    @property
    def module(self) -> torch.nn.Module:
        return self.averaged.module

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Fold the current weights of ``model`` (unwrapped, not DDP) into the average."""
        self.averaged.update_parameters(model)
        for mine, theirs in zip(self.module.buffers(), model.buffers()):
            if not (mine.is_floating_point() or mine.is_complex()):
                mine.copy_(theirs)  # counters (num_batches_tracked): copied, not averaged

