"""Temperature scaling (mammotrain.calibration): T recovers a known miscalibration, the ECE
matches a hand computation, a tiny cv run fits T on its validation patients only, stores it
in best.pt and best.safetensors, reports ECE before/after with a reliability diagram, and
``predict`` gives softmax(logits / T) (T = 1 for files written before calibration)."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mammotrain.calibration import (expected_calibration_error, fit_temperature, nll,
                                    reliability_bins, softmax)
from mammotrain.config import TrainConfig
from mammotrain.data import plan_examples, read_manifest
from mammotrain.engine.checkpoint import METADATA_KEY, read_checkpoint
from mammotrain.engine.fit import run_cv
from mammotrain.engine.inference import inference_model, predict_shards
from mammotrain.stream import EpochLoader, ShardStream
from mammotrain.tasks import get_task

TINY = dict(backbone="test_resnet", size=32, epochs=1, batch_size=4, workers=0,
            max_steps_per_epoch=1, gradcam=0, device="cpu", val_fraction=0.25)


def _calibrated_sample(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[n, k]`` and labels drawn from softmax(logits): calibrated by construction."""
    g = torch.Generator().manual_seed(seed)
    z = 1.5 * torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, dim=1), 1, generator=g).squeeze(1)
    return z, y


@pytest.mark.parametrize("k", [2, 3])
def test_temperature_recovers_a_known_overconfidence(k):
    z, y = _calibrated_sample(6000, k, seed=k)
    zh, yh = _calibrated_sample(6000, k, seed=100 + k)  # held out
    t = fit_temperature((3 * z).numpy(), y.numpy())
    assert 2.7 < t < 3.3, t
    over, fixed = (3 * zh).numpy(), yh.numpy()
    assert nll(over, fixed, t) < nll(over, fixed) - 0.05
    ece_before = expected_calibration_error(softmax(over), fixed)
    ece_after = expected_calibration_error(softmax(over, t), fixed)
    assert ece_after < 0.03 < ece_before and ece_after < ece_before / 3
    # NLL in torch at the fitted T is the optimum's: nearby temperatures are worse
    loss = lambda tt: float(torch.nn.functional.cross_entropy(3 * z / tt, y))
    assert loss(t) <= min(loss(t * 0.9), loss(t * 1.1))


def test_sigmoid_logit_and_underconfidence():
    z, y = _calibrated_sample(6000, 2, seed=7)
    one = (z[:, 1] - z[:, 0]).numpy()  # the same model as one logit
    t = fit_temperature(one / 2, y.numpy(), activation="sigmoid")  # under-confident x0.5
    assert 0.45 < t < 0.55, t
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0)) == 1.0
    with pytest.raises(ValueError, match="labels outside"):
        fit_temperature(np.zeros((3, 2)), np.array([0, 1, 2]))


def test_ece_against_a_hand_computed_example():
    p = np.array([[0.1, 0.9], [0.82, 0.18], [0.38, 0.62], [0.64, 0.36]])
    y = np.array([1, 1, 1, 1])
    # confidences 0.9 (bin 13, right), 0.82 (bin 12, wrong), 0.62 and 0.64 (bin 9: one
    # right, one wrong; mean confidence 0.63): 1/4 * 0.1 + 1/4 * 0.82 + 2/4 * |0.5 - 0.63|
    assert expected_calibration_error(p, y) == pytest.approx(0.295)
    bins = reliability_bins(p, y)
    assert bins["count"].tolist() == [0] * 9 + [2, 0, 0, 1, 1, 0]
    assert bins["accuracy"][9] == 0.5 and bins["confidence"][9] == pytest.approx(0.63)
    assert expected_calibration_error(np.array([[0.0, 1.0]]), np.array([1])) == 0.0
    assert math.isnan(expected_calibration_error(np.zeros((0, 2)), np.zeros(0)))


@pytest.fixture(scope="module")
def run(train_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("calibration") / "run"
    cfg = TrainConfig(task="diagnosis", views=2, shards=str(train_shards), out=str(out),
                      folds=(0, 2), **TINY)
    run_cv(cfg, log=lambda m: None)
    return out


def test_temperature_is_fitted_on_validation_patients_only(run, train_shards):
    examples, _ = plan_examples(read_manifest(train_shards), get_task("diagnosis"), 2)
    patient = {e.uid: e.patient for e in examples}
    for fold in (0, 2):
        d = run / f"fold{fold}"
        split = json.loads((d / "split.json").read_text())
        cal = json.loads((d / "calibration.json").read_text())
        assert cal["fitted_on"] == "validation" and cal["n"] == len(cal["uids"]) > 0
        assert sorted(cal["uids"]) == sorted(split["val"])
        assert not {patient[u] for u in cal["uids"]} & {patient[u] for u in split["test"]}
        metrics = json.loads((d / "metrics.json").read_text())
        assert metrics["temperature"] == cal["temperature"] > 0
        assert metrics["calibration_n"] == cal["n"] and metrics["ece_kind"] == "top-label"
        for k in ("ece_before", "ece_after", "nll_before", "nll_after"):
            assert 0 <= metrics[k] < 10, k
        # the test scores are the calibrated ones
        rows = pq.read_table(d / "predictions.parquet").to_pylist()
        z = np.array([r["logits"] for r in rows])
        np.testing.assert_allclose([r["scores"] for r in rows],
                                   softmax(z, cal["temperature"]), atol=1e-5)
        # stored in the checkpoint and the self-contained model file
        assert read_checkpoint(d / "best.pt")["temperature"] == cal["temperature"]
        assert read_checkpoint(d / "best.safetensors")["temperature"] == \
            pytest.approx(cal["temperature"])


def test_report_gives_ece_before_after_and_a_reliability_diagram(run):
    assert (run / "reliability.png").stat().st_size > 1000
    md = (run / "summary.md").read_text()
    assert "## Calibration (temperature scaling)" in md and "reliability.png" in md
    assert "top-label ECE" in md and "fitted T on fewer than 100 validation examples" in md
    cal = json.loads((run / "summary.json").read_text())["calibration"]
    assert [f["fold"] for f in cal["per_fold"]] == [0, 2]
    assert 0 <= cal["ece_before"] <= 1 and 0 <= cal["ece_after"] <= 1


def _direct_logits(ck, shards) -> dict[str, np.ndarray]:
    """uid -> the model's logits, computed here without mammotrain's predict."""
    cfg, model = inference_model(ck, shards, "cpu")
    examples, _ = plan_examples(read_manifest(shards), get_task(cfg.task), cfg.views,
                                unlabeled=True)
    stream = ShardStream(shards, examples, cfg.preprocess(), train=False, seed=cfg.seed)
    out = {}
    with torch.no_grad():
        for b in EpochLoader(stream, 8, workers=0, drop_last=False):
            for u, z in zip(b["uid"], model.eval()(b["image"]).numpy()):
                out[u] = z
    return out


def test_predict_applies_the_bundle_temperature(run, train_shards, tmp_path):
    best = torch.load(run / "fold0" / "best.pt", map_location="cpu", weights_only=False)
    logits = _direct_logits(read_checkpoint(run / "fold0" / "best.pt"), train_shards)
    for t, name in ((2.5, "t25"), (None, "old")):
        ck = dict(best)
        if t is None:
            ck.pop("temperature")  # a best.pt written before calibration
        else:
            ck["temperature"] = t
        torch.save(ck, tmp_path / f"{name}.pt")
        rows = predict_shards(tmp_path / f"{name}.pt", train_shards, tmp_path / f"{name}.parquet",
                              device="cpu", figure=0, log=lambda m: None)["rows"]
        z = np.array([logits[r["uid"]] for r in rows])
        np.testing.assert_allclose([r["scores"] for r in rows], softmax(z, t or 1.0),
                                   atol=1e-5)


def test_model_file_without_temperature_loads_with_one(run, tmp_path):
    src = run / "fold0" / "best.safetensors"
    with safe_open(str(src), framework="pt") as fh:
        doc = json.loads(fh.metadata()[METADATA_KEY])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    assert doc["temperature"] > 0
    doc.pop("temperature")
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={METADATA_KEY: json.dumps(doc)})
    assert read_checkpoint(tmp_path / "old.safetensors")["temperature"] == 1.0
    doc["temperature"] = -1
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={METADATA_KEY: json.dumps(doc)})
    with pytest.raises(ValueError, match="temperature -1 is not a positive number"):
        read_checkpoint(tmp_path / "bad.safetensors")
