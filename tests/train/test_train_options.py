"""``--clip-grad``: the gradients' global norm is clipped before the optimiser step.

With AdamW the first step moves every parameter by about ``lr`` whatever the gradient's
scale, unless the gradient is far below Adam's ``eps`` (1e-8): clipped to a norm of 1e-12,
the same step moves the weights by at most ``lr * 1e-4``. A clip far above the norm changes
nothing at all."""

from __future__ import annotations

import torch
from click.testing import CliRunner

from mammotrain.cli import main


TINY = ["--task", "diagnosis", "--views", "1", "--fold", "0", "--backbone", "test_resnet",
        "--size", "32", "--epochs", "1", "--batch-size", "4", "--workers", "0",
        "--max-steps-per-epoch", "1", "--device", "cpu", "--gradcam", "0", "--val-fraction",
        "0", "--lr", "1e-3"]


def _weights(shards, out, *extra) -> dict[str, torch.Tensor]:
    r = CliRunner().invoke(main, ["train", "--shards", str(shards), "--out", str(out),
                                  *TINY, *extra])
    assert r.exit_code == 0, r.output
    model = torch.load(out / "fold0" / "best.pt", map_location="cpu", weights_only=False)
    return {k: v for k, v in model["model"].items() if v.is_floating_point()
            and "running" not in k}


def test_clip_grad(train_shards, tmp_path):  # noqa: F811
    free = _weights(train_shards, tmp_path / "free")
    loose = _weights(train_shards, tmp_path / "loose", "--clip-grad", "1e6")
    tight = _weights(train_shards, tmp_path / "tight", "--clip-grad", "1e-12")
    for k in free:  # a clip above the gradient norm: the very same step
        torch.testing.assert_close(loose[k], free[k], rtol=0, atol=0, msg=k)
    moved = max(float((free[k] - tight[k]).abs().max()) for k in free)
    assert 0.5e-3 < moved < 2e-3  # the unclipped step moved weights by ~lr, the clipped one not
    r = CliRunner().invoke(main, ["train", "--shards", str(train_shards), "--out",
                                  str(tmp_path / "bad"), *TINY, "--clip-grad", "0"])
    assert r.exit_code == 2 and "--clip-grad" in r.output


def test_option_choices_match_the_constants_the_code_uses():
    """options.py keeps literal choice lists (so --help imports no torch); each must equal
    the constant the training code checks against, or an accepted value would fail later."""
    import click

    from mammotrain.augment import PRESETS
    from mammotrain.cli import main
    from mammotrain.data import SPLIT_BY, VIEW_MODES
    from mammotrain.preprocess import INTERPOLATIONS
    from mammotrain.schedule import SCHEDULES
    from mammotrain.splits import SPLITS

    params = {p.name: p for p in main.commands["cv"].params}
    expected = {"split": set(SPLITS), "split_by": set(SPLIT_BY), "augment": set(PRESETS),
                "schedule": set(SCHEDULES), "interpolation": {*INTERPOLATIONS, "timm"}}
    for name, values in expected.items():
        assert isinstance(params[name].type, click.Choice), name
        assert set(params[name].type.choices) == values, name
    # --views: a choice converted to int; every mode one the planner and the tasks accept
    assert {int(c) for c in params["views"].type.choices} == set(VIEW_MODES)
    assert params["views"].type.convert("4", None, None) == 4
    from mammotrain.tasks import get_task
    assert set(get_task("diagnosis").views) == set(VIEW_MODES)
