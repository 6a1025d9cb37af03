"""Training knobs: lr warm-up, EMA of the weights, gradient accumulation, torch.compile, and
their command-line wiring; one short real run with all of them on a ROWSxCOLS input."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from mammotrain.config import TrainConfig
from mammotrain.ema import ModelEma
from mammotrain.engine.fit import train_fold
from mammotrain.schedule import build_scheduler, lr_factor
from mammotrain.engine.stepping import OptimStep, compile_model



def _cosine(e, n):
    return 0.5 * (1 + math.cos(math.pi * e / n))


@pytest.mark.parametrize("schedule,warmup,epochs,want", [
    ("cosine", 2, 5, [1 / 3, 2 / 3, 1.0, _cosine(1, 3), _cosine(2, 3)]),
    ("step", 1, 4, [0.5, 1.0, 1.0, 0.1]),                       # step_size 2 after warm-up
    ("constant", 3, 4, [0.25, 0.5, 0.75, 1.0]),
    ("constant", 0, 2, [1.0, 1.0]),
])
def test_warmup_lr_hand_computed(schedule, warmup, epochs, want):
    got = [lr_factor(schedule, e, epochs, step_size=2, gamma=0.1, warmup=warmup)
           for e in range(epochs)]
    assert got == pytest.approx(want)


def test_warmup_through_the_real_scheduler():
    cfg = TrainConfig(task="diagnosis", shards="x", device="cpu", lr=0.2, epochs=4,
                      schedule="cosine", warmup_epochs=1).resolved()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_scheduler(cfg, opt)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1, 0.2, 0.2 * 0.75, 0.2 * 0.25])


def _tiny(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))


def _data(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _scaler():
    return torch.amp.GradScaler("cpu", enabled=False)


def test_ema_is_the_hand_computed_average_after_two_steps():
    model, decay = _tiny(), 0.9
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ema = ModelEma(model, decay)
    step = OptimStep(model, model, opt, _scaler(), ema=ema)
    snaps = [[p.detach().clone() for p in model.parameters()]]
    x, y = _data()
    for i in range(2):
        step.backward(torch.nn.functional.cross_entropy(model(x), y), i)
        snaps.append([p.detach().clone() for p in model.parameters()])
    assert not torch.equal(snaps[0][0], snaps[2][0])  # the weights moved
    for k, p in enumerate(ema.module.parameters()):
        want = (decay ** 2 * snaps[0][k] + decay * (1 - decay) * snaps[1][k]
                + (1 - decay) * snaps[2][k])
        torch.testing.assert_close(p, want)
    with pytest.raises(ValueError, match="decay"):
        ModelEma(model, 1.0)


def _train(accum, batches, total):
    model = _tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    step = OptimStep(model, model, opt, _scaler(), accum=accum, total=total)
    stepped = []
    for i, (x, y) in enumerate(batches):
        stepped.append(step.backward(torch.nn.functional.cross_entropy(model(x), y), i))
    return [p.detach() for p in model.parameters()], stepped


def test_accumulating_two_batches_of_b_equals_one_batch_of_2b():
    x, y = _data(8)
    big, s1 = _train(1, [(x, y)], 1)
    acc, s2 = _train(2, [(x[:4], y[:4]), (x[4:], y[4:])], 2)
    assert s1 == [True] and s2 == [False, True]
    for a, b in zip(big, acc):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    plain, _ = _train(1, [(x[:4], y[:4]), (x[4:], y[4:])], 2)  # two steps: not the same
    assert not torch.allclose(plain[0], big[0], atol=1e-4)


def test_a_short_last_group_is_its_own_mean():
    x, y = _data(12)
    ref, _ = _train(1, [(x[:8], y[:8]), (x[8:], y[8:])], 2)
    acc, stepped = _train(2, [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])], 3)
    assert stepped == [False, True, True]
    for a, b in zip(ref, acc):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    st = OptimStep(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), None, None, accum=2, total=5)
    assert [st.group_size(i) for i in range(5)] == [2, 2, 2, 2, 1]
    assert [st.is_last(i) for i in range(5)] == [False, True, False, True, True]


def test_compile_wraps_the_module():
    if not hasattr(torch, "compile") or not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not available here")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile on CPU needs a C compiler")
    model = _tiny()
    assert compile_model(model, False) is model
    compiled = compile_model(model, True)
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled._orig_mod is model


def test_cli_wires_the_new_options_into_the_config(tmp_path):
    from click.testing import CliRunner

    from mammotrain.cli import _config, cv_cmd, main

    args = ["--task", "density", "--shards", str(tmp_path), "--out", str(tmp_path / "o"),
            "--size", "1024x512", "--augment", "full", "--aug-rotate", "3", "--ema", "0.99",
            "--warmup-epochs", "2", "--accum-steps", "4", "--compile"]
    ctx = cv_cmd.make_context("cv", list(args))  # click consumes the list
    cfg = _config(ctx.params)
    assert (cfg.size, cfg.resize, cfg.augment, cfg.aug_rotate) == ((1024, 512), "letterbox",
                                                                   "full", 3.0)
    assert (cfg.ema, cfg.warmup_epochs, cfg.accum_steps, cfg.compile) == (0.99, 2, 4, True)
    assert cfg.flip_p == 0.5 and cfg.augmentation().rotate == 3.0
    assert cfg.augmentation().translate == 0.05  # the preset's, not overridden
    plain = _config(cv_cmd.make_context("cv", list(args[:6])).params)
    assert (plain.size, plain.resize, plain.augment, plain.ema, plain.compile) == (
        None, "square", "flip", None, False)
    help_text = CliRunner().invoke(main, ["cv", "--help"]).output
    for opt in ("--augment", "--aug-vflip", "--ema", "--warmup-epochs", "--accum-steps",
                "--compile", "ROWSxCOLS"):
        assert opt in help_text
    r = CliRunner().invoke(main, ["cv", *args[:6], "--size", "1024x8"])
    assert r.exit_code == 2 and "at least 16 pixels" in r.output


@pytest.mark.parametrize("kw,message", [
    (dict(size=(64, 32)), "resize must be 'letterbox' for a non-square size"),
    (dict(size=(64, 32), resize="letterbox", task="detection"), "size must be square for "
                                                                  "detection"),
    (dict(augment="none", aug_rotate=3.0), "'flip' or 'full' when aug_"),
    (dict(aug_gamma=1.5), "gamma must be < 1"),
    (dict(ema=1.0), "ema must be in"),
    (dict(accum_steps=0), "accum_steps must be >= 1"),
])
def test_bad_tuning_options_name_the_field(kw, message):
    cfg = TrainConfig(**{"task": "density", "shards": "x", "device": "cpu", **kw})
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        cfg.resolved().validate()


def test_short_run_with_every_knob_on_a_rectangular_input(train_shards, tmp_path):
    cfg = TrainConfig(task="diagnosis", views=2, backbone="test_resnet", size=(48, 32),
                      resize="letterbox", epochs=2, batch_size=2, workers=0,
                      max_steps_per_epoch=2, gradcam=1, device="cpu", val_fraction=0.25,
                      shards=str(train_shards), out=str(tmp_path), select="last", lr=1e-3,
                      augment="full", ema=0.5, warmup_epochs=1, accum_steps=2,
                      schedule="constant").resolved().validate()
    metrics = train_fold(cfg, 1, log=lambda m: None)
    fold = tmp_path / "fold1"
    hist = [json.loads(ln) for ln in (fold / "history.jsonl").read_text().splitlines()]
    assert [h["lr"] for h in hist] == pytest.approx([5e-4, 1e-3])  # warm-up, then constant
    assert metrics["n_test"] > 0 and (fold / "gradcam.png").exists()
    ck = torch.load(fold / "checkpoint.pt", map_location="cpu", weights_only=False)
    best = torch.load(fold / "best.pt", map_location="cpu", weights_only=False)
    ema_state = {k[len("averaged.module."):]: v for k, v in ck["ema"].items()
                 if k.startswith("averaged.module.")}
    assert ema_state.keys() == best["model"].keys()
    for k, v in best["model"].items():  # the selected (last) epoch saved the EMA weights
        torch.testing.assert_close(v, ema_state[k])
    moved = [k for k, v in best["model"].items()
             if v.is_floating_point() and not torch.equal(v, ck["model"][k])]
    assert moved  # the averaged weights differ from the raw ones
    # the rectangular model exports to ONNX at rows x cols, checked with onnxruntime
    from mammotrain.export import export_onnx

    res = export_onnx(fold / "best.safetensors", tmp_path / "m.onnx", log=lambda m: None)
    assert res["input"] == [None, 2, 1, 48, 32]
    assert max(res["max_abs_diff"].values()) < 1e-4
