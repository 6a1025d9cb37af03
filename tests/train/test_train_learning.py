"""The learning test: a short CPU run on synthetic shards learns diagnosis on every held-out
fold (each fold's AUC above the bar, its 95 % interval clear of chance) and on the pooled
out-of-fold predictions.

Data: 300 synthetic patients (`mammoprep synth --size 256x208`, the published LUMINA layout:
only the named breasts are labelled), harmonised to their own low-energy reference, 96 px
shards, 3 patient-level folds; every fold is the test fold once (trained on the other two
minus a patient-grouped validation split that selects the epoch).
Setting: timm ``test_resnet`` (random init), single-view, 96 px, 16 epochs, lr 2e-3, x0.1
after epoch 12, validation, selection and the tested model on an exponential moving average
of the weights (``ema=0.95`` per step, about one epoch). About 2 minutes on 2 cores
including the data.

Why the average: without it the validation loss jumped between epochs (to 2.8, 3.0 and 5.8
in fold 2, while the training loss fell smoothly), and in fold 2 the epoch with the
highest validation AUC (10) was one whose scores called nearly every test image malignant
(accuracy 0.527). Pooling the three folds' scores then gave 0.732, below every fold. With
the same training run (identical training losses) but the averaged weights evaluated,
fold 2's validation loss stays at or under 0.75 in all 16 epochs and every fold's selected
model is calibrated (accuracy 0.72-0.81). Gradient
clipping (1.0) or a 2-epoch warm-up did not remove the jumps (fold 2, one run each).

Measured on this setting, 2026-12-07, with the synthetic cohort of issue 24 (half of the
Benign group's named breasts now hold a round benign mass, and 15 % of cancers are small and
faint, so diagnosis is no longer "is there a lesion"; the run is deterministic on CPU):
held-out AUC per test fold 0 / 1 / 2 = 0.771 / 0.766 / 0.754, 95 % interval lower bounds
0.699 / 0.680 / 0.671, accuracy 0.701 / 0.709 / 0.672; pooled out-of-fold AUC 0.759 (95 %
CI 0.712-0.804). With the earlier cohort (malignant breasts the only ones with lesions):
0.836 / 0.806 / 0.857, pooled 0.824 (0.785-0.861); without the average 0.853 / 0.805 /
0.842, pooled 0.732 (0.671-0.785). The bars: AUC > 0.7 on every fold (a margin of 0.054
under the lowest fold) with the fold's whole 95 % interval (patient-level bootstrap) above
0.6, so no fold passes by luck; and pooled AUC > 0.7 (a margin of 0.059). Other settings
moved the folds by 0.02-0.05 on the earlier cohort (lr 1e-3: 0.794 / 0.832 / 0.806), about
the size of the fold margin.
"""

from __future__ import annotations

import json

import pytest

from mammotrain.config import TrainConfig
from mammotrain.engine.fit import run_cv
from mammotrain.metrics import bootstrap_ci
from mammotrain.report import load_run, pooled_metrics

from ..conftest import build

FOLDS = (0, 1, 2)
FOLD_BAR, FOLD_CI_BAR, POOLED_BAR = 0.7, 0.6, 0.7


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> dict:
    shards = build(tmp_path_factory.getbasetemp(), "learn-shards", 300, 3, 96, folds=3,
                   per_shard=32, harmonized=True, synth_size="256x208")
    out = tmp_path_factory.mktemp("learn")
    cfg = TrainConfig(task="diagnosis", views=1, backbone="test_resnet", size=96, epochs=16,
                      step_size=12, batch_size=16, lr=2e-3, ema=0.95, folds=FOLDS, workers=0,
                      gradcam=0, device="cpu", shards=str(shards), out=str(out), seed=0)
    run_cv(cfg, log=print, report=False)
    folds = {f: json.loads((out / f"fold{f}" / "metrics.json").read_text()) for f in FOLDS}
    run = load_run(out)
    for f in FOLDS:  # each fold's AUC interval (patient-level bootstrap of its test images)
        rows = [r for r in run["predictions"] if r["fold"] == f]
        ci = bootstrap_ci([r["label"] for r in rows], [r["scores"] for r in rows],
                          [r["patient"] for r in rows], n_boot=500)
        folds[f]["auc_ci"] = ci["auc"]
    return {"folds": folds, "pooled": pooled_metrics(run)}


def test_diagnosis_is_learned_on_every_held_out_fold(learned):
    for f, m in learned["folds"].items():
        lo, hi = m["auc_ci"]
        print(f"fold {f}: AUC {m['auc']:.3f} (95 % CI {lo:.3f}-{hi:.3f}), ACC {m['acc']:.3f}, "
              f"selected epoch {m['selected_epoch']}, {m['n_test']} test images")
        assert m["n_test"] > 150 and m["selection"].startswith("highest validation AUC")
        assert m["auc"] > FOLD_BAR, f"fold {f}"
        assert lo > FOLD_CI_BAR, f"fold {f}"


def test_pooled_out_of_fold_auc_interval_is_above_the_bar(learned):
    auc = learned["pooled"]["values"]["auc"]
    print(f"pooled AUC {auc['value']:.3f} (95 % CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f}) "
          f"over {learned['pooled']['n']} images of {learned['pooled']['patients']} patients")
    assert learned["pooled"]["n"] == sum(m["n_test"] for m in learned["folds"].values())
    assert auc["value"] > POOLED_BAR
