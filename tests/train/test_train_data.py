"""mammotrain.data: planning from the manifest, patient-grouped splits, the webdataset stream
(ranks, workers, epochs), preprocessing and exact-size batches."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from mammotrain.data import plan_examples, read_manifest, regroup_folds, split_examples
from mammotrain.preprocess import Preprocess, letterbox, normalize, resize_square, to_unit
from mammotrain.stream import EpochLoader, ShardStream, rebatch
from mammotrain.tasks import get_task



def _row(key, view, birads="2", pathology="benign", density="B", fold=0, patient=None):
    from mammoprep.labels import task_labels

    labels = task_labels(pathology, birads, density)
    return {"key": key, "view": view, "patient": patient or key[:4], "fold": fold,
            "shard": "shard-000000.tar", "pathology": pathology, "birads": birads,
            "density": density, "energy": "low", "manufacturer": "X",
            **{f"label_{k}": v for k, v in labels.items()}}


# a hand table: p1 both views benign, p2 malignant L + contralateral R (pathology None),
# p3 one view only, p4 BI-RADS 0 (excluded from diagnosis, kept for density), p5 no fold
ROWS = [_row("p001_L", "cc"), _row("p001_L", "mlo"),
        _row("p002_L", "cc", "5", "malignant"), _row("p002_L", "mlo", "5", "malignant"),
        _row("p002_R", "cc", "5", None), _row("p002_R", "mlo", "5", None),
        _row("p003_L", "cc"),
        _row("p004_L", "cc", "0"), _row("p004_L", "mlo", "0"),
        _row("p005_L", "cc", fold=None), _row("p005_L", "mlo", fold=None)]


def test_plan_two_view_counts_every_exclusion():
    ex, rep = plan_examples(ROWS, get_task("diagnosis"), 2)
    assert [e.uid for e in ex] == ["p001_L", "p002_L"]
    assert [e.label for e in ex] == [0, 1]
    assert ex[0].views == ("cc", "mlo")
    assert rep.excluded == {"label_null": 2, "one_view": 1, "no_fold": 1}
    assert rep.candidates == 6 and rep.examples == 2 and rep.unit == "breast"
    assert rep.examples + sum(rep.excluded.values()) == rep.candidates
    # density keeps BI-RADS 0
    ex, rep = plan_examples(ROWS, get_task("density"), 2)
    assert [e.uid for e in ex] == ["p001_L", "p002_L", "p002_R", "p004_L"]
    assert rep.excluded == {"one_view": 1, "no_fold": 1}


def test_plan_single_view_counts_images():
    ex, rep = plan_examples(ROWS, get_task("diagnosis"), 1)
    assert [e.uid for e in ex] == ["p001_L.cc", "p001_L.mlo", "p002_L.cc", "p002_L.mlo",
                                   "p003_L.cc"]
    assert rep.excluded == {"label_null": 4, "no_fold": 2}
    assert rep.examples + sum(rep.excluded.values()) == len(ROWS)


def test_plan_on_real_shards(train_shards):
    rows = read_manifest(train_shards)
    for task in ("diagnosis", "birads2", "birads3", "density"):
        spec = get_task(task)
        ex1, rep1 = plan_examples(rows, spec, 1)
        assert rep1.examples + sum(rep1.excluded.values()) == len(rows)
        nulls = sum(spec.label(r) is None for r in rows)
        assert rep1.excluded.get("label_null", 0) == nulls
        ex2, rep2 = plan_examples(rows, spec, 2)
        assert rep2.examples + sum(rep2.excluded.values()) == len({r["key"] for r in rows})
        assert all(e.views == ("cc", "mlo") for e in ex2)


def test_split_is_patient_grouped_and_never_uses_the_test_fold(train_shards):
    ex, _ = plan_examples(read_manifest(train_shards), get_task("density"), 1)
    for fold in range(5):
        sp = split_examples(ex, fold, 0.25, seed=0)
        parts = [{e.patient for e in getattr(sp, k)} for k in ("train", "val", "test")]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert all(e.fold == fold for e in sp.test)
        assert all(e.fold != fold for e in sp.train + sp.val)
        assert sp.val and sp.train
        assert len(sp.train) + len(sp.val) + len(sp.test) == len(ex)
    a, b = split_examples(ex, 1, 0.25, 3), split_examples(ex, 1, 0.25, 3)
    assert [e.uid for e in a.val] == [e.uid for e in b.val]


def test_leave_one_vendor_out_folds(train_shards):
    """--split-by vendor: fold K = every example of the K-th manufacturer (sorted); the
    training and validation patients never include a patient of the test vendor, even one
    who also has images of another vendor."""
    from dataclasses import replace

    ex, plan = plan_examples(read_manifest(train_shards), get_task("density"), 1)
    vendors = sorted({e.manufacturer for e in ex})
    assert len(vendors) >= 3  # the synthetic cohort's vendor profiles
    # one patient imaged on two systems (a study moved between sites), one without vendor
    moved = ex[0].patient
    other = next(v for v in vendors if v != ex[0].manufacturer)
    ex = [replace(e, manufacturer=other) if e.patient == moved and e.views == ("mlo",)
          else e for e in ex]
    ex[-1] = replace(ex[-1], manufacturer=None)
    got = regroup_folds(ex, plan, "vendor")
    assert plan.fold_names == dict(enumerate(vendors)) and plan.split_by == "vendor"
    assert plan.excluded["no_vendor"] == 1 and len(got) == len(ex) - 1
    assert all(plan.fold_names[e.fold] == e.manufacturer for e in got)
    for k, name in plan.fold_names.items():
        sp = split_examples(got, k, 0.25, seed=0)
        assert sp.test and all(e.manufacturer == name for e in sp.test)
        test_patients = {e.patient for e in sp.test}
        assert all(e.manufacturer != name and e.patient not in test_patients
                   for e in sp.train + sp.val)
        if moved in test_patients:  # the moved patient's other-vendor image is unused
            assert moved not in {e.patient for e in sp.train + sp.val}
    ex[0] = replace(ex[0], energy="unknown")  # mammoprep's word for no energy class
    by_energy = regroup_folds(ex, plan, "energy")
    assert set(plan.fold_names.values()) <= {"high", "low"} and "no_energy" in plan.excluded
    assert len(by_energy) == len(ex) - plan.excluded["no_energy"]
    with pytest.raises(ValueError, match="split_by"):
        regroup_folds(ex, plan, "site")
    assert regroup_folds(ex, plan, "fold") == ex


def _uids(loader, epoch):
    loader.set_epoch(epoch)
    return [u for b in loader for u in b["uid"]]


def test_ranks_get_equal_padded_shares_covering_every_example(train_shards):
    ex, _ = plan_examples(read_manifest(train_shards), get_task("density"), 1)
    ex = ex[:len(ex) - (1 - len(ex) % 2)]  # an odd count: padding needed for 2 ranks
    assert len(ex) % 2 == 1
    per_rank = []
    for rank in range(2):
        s = ShardStream(train_shards, ex, Preprocess(16), train=True, seed=1, rank=rank, world=2)
        per_rank.append(s.epoch_uids())
        loader = EpochLoader(s, 4, workers=0, drop_last=False)
        assert sorted(_uids(loader, 0)) == sorted(per_rank[-1])
    assert len(per_rank[0]) == len(per_rank[1]) == (len(ex) + 1) // 2
    assert set(per_rank[0]) | set(per_rank[1]) == {e.uid for e in ex}
    steps = [EpochLoader(ShardStream(train_shards, ex, Preprocess(16), train=True, rank=r,
                                     world=2), 5).steps for r in range(2)]
    assert steps[0] == steps[1] == ((len(ex) + 1) // 2) // 5


def test_epochs_shuffle_differently_and_reproducibly_with_workers(train_shards):
    ex, _ = plan_examples(read_manifest(train_shards), get_task("density"), 1)
    mk = lambda w: EpochLoader(ShardStream(train_shards, ex, Preprocess(16), train=True,
                                           seed=5), 8, workers=w, drop_last=False)
    e0, e1 = _uids(mk(0), 0), _uids(mk(0), 1)
    assert e0 != e1 and sorted(e0) == sorted(e1) == sorted(e.uid for e in ex)
    assert _uids(mk(0), 1) == e1                         # seeded
    w2 = _uids(mk(2), 1)                                  # two worker processes
    assert sorted(w2) == sorted(e1)
    assert Counter(len(b["uid"]) for b in mk(2)) == Counter(len(b["uid"]) for b in mk(0))


def test_training_loader_runs_exactly_steps_batches_of_batch_size(train_shards):
    ex, _ = plan_examples(read_manifest(train_shards), get_task("birads2"), 2)
    loader = EpochLoader(ShardStream(train_shards, ex, Preprocess(16), train=True), 3,
                         workers=2)
    sizes = [len(b["label"]) for b in loader]
    assert len(sizes) == loader.steps == len(ex) // 3 and set(sizes) == {3}
    capped = EpochLoader(ShardStream(train_shards, ex, Preprocess(16), train=True), 3,
                         max_steps=2)
    assert len(list(capped)) == 2


def test_two_view_batches_and_flip(train_shards):
    ex, _ = plan_examples(read_manifest(train_shards), get_task("birads3"), 2)
    ex = ex[:4]
    get = lambda p: next(iter(EpochLoader(ShardStream(train_shards, ex, Preprocess(24),
                                                      train=True, flip_p=p, shuffle_buffer=1),
                                          4, drop_last=False)))
    plain, flipped = get(0.0), get(1.0)
    assert plain["image"].shape == (4, 2, 1, 24, 24)
    assert flipped["flipped"].all() and not plain["flipped"].any()
    order = [plain["uid"].index(u) for u in flipped["uid"]]
    torch.testing.assert_close(flipped["image"], plain["image"][order].flip(-1))


def test_rebatch_exact_sizes():
    parts = [{"label": torch.arange(n), "uid": [str(i) for i in range(n)]} for n in (3, 5, 1)]
    out = list(rebatch(parts, 4))
    assert [len(b["label"]) for b in out] == [4, 4, 1]
    assert torch.cat([b["label"] for b in out]).tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 0]


# ----------------------------------------------------------------------- preprocessing

def test_to_unit_scales_by_bit_depth():
    px = np.array([[0, 4095], [2048, 65535]], np.uint16)
    u = to_unit(px, 12)
    assert u[0, 1] == 1.0 and u[1, 1] == 1.0 and u[1, 0] == pytest.approx(2048 / 4095)
    assert to_unit(px, None)[1, 1] == 1.0 and to_unit(px, None)[0, 1] == pytest.approx(4095 / 65535)


def test_square_resize_and_letterbox_move_boxes():
    img = torch.zeros(40, 20)
    img[10:20, 4:8] = 1.0  # box (4, 10, 8, 20)
    box = np.array([[4, 10, 8, 20]], float)
    sq, (sx, sy, dx, dy) = resize_square(img, 20)
    assert sq.shape == (20, 20) and (sx, sy, dx, dy) == (1.0, 0.5, 0.0, 0.0)
    lb, (sx, sy, dx, dy) = letterbox(img, 20)
    assert lb.shape == (20, 20) and (sx, sy) == (0.5, 0.5) and (dx, dy) == (5.0, 0.0)
    assert lb[:, :5].abs().max() == 0 and lb[:, 15:].abs().max() == 0  # zero padding
    prep = Preprocess(20, resize="letterbox", intensity="u16")
    px = (img.numpy() * 65535).astype(np.uint16)
    x, b = prep(px, None, box, flip=False)
    np.testing.assert_allclose(b, [[7, 5, 9, 10]])
    x_f, b_f = prep(px, None, box, flip=True)
    np.testing.assert_allclose(b_f, [[11, 5, 13, 10]])  # mammoprep.geometry.hflip in 20 px
    torch.testing.assert_close(x_f, x.flip(-1))
    assert x.shape == (1, 20, 20) and x.min() == 0 and x.max() <= 1
    # the bright region sits inside the mapped box
    ys, xs = np.nonzero(x[0].numpy() > 0.05)
    assert xs.min() >= 7 - 1 and xs.max() <= 9 and ys.min() >= 5 - 1 and ys.max() <= 10


def test_normalize_channels():
    img = torch.full((5, 1, 2, 2), 0.485)
    x3 = normalize(img, 3)
    assert x3.shape == (5, 3, 2, 2) and x3[:, 0].abs().max() < 1e-6
    assert normalize(img, 1).shape == (5, 1, 2, 2)
    with pytest.raises(ValueError, match="resize"):
        Preprocess(32, resize="crop")
