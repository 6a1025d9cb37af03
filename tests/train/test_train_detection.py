"""The multi-task DETR: matcher, losses, metrics (against hand-computed cases), the backbones
it is tested with, boxes through `mammoprep shard` and the loader, overfitting a handful of
synthetic lesion images, and the `cv --task detection` / `predict` commands."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import torch
from click.testing import CliRunner

from mammotrain.cli import main
from mammotrain.data import plan_examples, read_manifest
from mammotrain.detection_metrics import (average_precision, detection_metrics,
                                          mean_best_iou)
from mammotrain.detr import DetrConfig, build_detector
from mammotrain.detr_loss import (DetrCriterion, HungarianMatcher, LossWeights, match_cost,
                                  targets_from_batch)
from mammotrain.preprocess import Preprocess
from mammotrain.stream import EpochLoader, ShardStream
from mammotrain.tasks import get_task

from ..conftest import build, mammoprep

TINY = ["--backbone", "test_resnet", "--size", "48", "--epochs", "1", "--batch-size", "4",
        "--workers", "0", "--max-steps-per-epoch", "2", "--device", "cpu", "--gradcam", "2"]


# ----------------------------------------------------------------------------- matcher

def _random_preds(b, q, seed=0):
    g = torch.Generator().manual_seed(seed)
    boxes = torch.cat([torch.rand(b, q, 2, generator=g) * 0.6 + 0.2,
                       torch.rand(b, q, 2, generator=g) * 0.2 + 0.05], -1)
    return boxes, torch.randn(b, q, generator=g)


def test_matcher_batched_and_unbatched_agree():
    boxes, obj = _random_preds(5, 3)
    g = torch.Generator().manual_seed(1)
    targets = [torch.cat([torch.rand(n, 2, generator=g) * 0.6 + 0.2,
                          torch.rand(n, 2, generator=g) * 0.2 + 0.05], -1)
               for n in (0, 1, 3, 2, 1)]
    a = HungarianMatcher(batched=True)(boxes, obj, targets)
    b = HungarianMatcher(batched=False)(boxes, obj, targets)
    for (qa, ta), (qb, tb), t in zip(a, b, targets):
        assert torch.equal(qa, qb) and torch.equal(ta, tb)
        assert len(qa) == min(3, len(t)) and len(set(qa.tolist())) == len(qa)
    # the assignment is optimal: no permutation of an image's targets costs less
    cost = match_cost(boxes[2], obj[2], targets[2], LossWeights())
    q, t = a[2]
    best = cost[q, t].sum()
    import itertools
    for perm in itertools.permutations(range(3)):
        assert best <= cost[list(perm), [0, 1, 2]].sum() + 1e-6


def test_match_cost_hand_checked():
    pred = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    obj = torch.tensor([0.0])                      # sigmoid 0.5
    tgt = torch.tensor([[0.5, 0.5, 0.2, 0.2],      # same box: L1 0, GIoU 1
                        [0.6, 0.5, 0.2, 0.2]])     # shifted: L1 0.1, IoU = GIoU = 1/3
    cost = match_cost(pred, obj, tgt, LossWeights())
    assert cost[0, 0].item() == pytest.approx(5 * 0.0 - 2 * 1.0 - 0.5, abs=1e-5)
    assert cost[0, 1].item() == pytest.approx(5 * 0.1 - 2 / 3 - 0.5, abs=1e-5)


def test_empty_targets_are_valid():
    boxes, obj = _random_preds(2, 3)
    boxes.requires_grad_(True)
    obj.requires_grad_(True)
    assert all(len(q) == 0 for q, _ in HungarianMatcher()(boxes, obj, [torch.zeros(0, 4)] * 2))
    crit = DetrCriterion()
    parts = crit.layer_losses(boxes, obj, [torch.zeros(0, 4)] * 2)
    assert parts["bbox"].item() == 0 and parts["giou"].item() == 0
    # with no lesion every query is pushed to objectness 0
    expected = torch.nn.functional.binary_cross_entropy_with_logits(obj, torch.zeros_like(obj))
    assert parts["obj"].item() == pytest.approx(expected.item(), rel=1e-6)
    (parts["obj"] + parts["bbox"]).backward()
    assert obj.grad is not None and (obj.grad > 0).all()


def test_targets_from_batch_converts_clips_and_caps():
    px = np.array([[10, 20, 30, 60],      # 20 x 40
                   [0, 0, 4, 4],          # 4 x 4 (smallest, dropped by the cap of 3)
                   [50, 50, 50, 70],      # no width: dropped
                   [40, 40, 70, 70],      # 30 x 30
                   [90, 90, 130, 110]],   # clipped to 100: 10 x 10
                  np.float32)
    (t,) = targets_from_batch([[px]], size=100, max_targets=3)
    expected = torch.tensor([[0.55, 0.55, 0.30, 0.30], [0.20, 0.40, 0.20, 0.40],
                             [0.95, 0.95, 0.10, 0.10]])
    assert torch.allclose(t, expected, atol=1e-6)


# ----------------------------------------------------------------------------- metrics

def test_detection_metrics_match_a_hand_computed_case():
    """Two images, one lesion each. Detections by score: hit (0.9), miss (0.8), hit (0.7):
    precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1. COCO's 101-point AP: recall points
    0..0.50 (51) read precision 1, points 0.51..1 (50) read 2/3."""
    pred = [[[0, 0, 10, 10]], [[50, 50, 60, 60], [0, 0, 10, 10]]]
    scores = [[0.9], [0.8, 0.7]]
    gt = [[[0, 0, 10, 10]], [[0, 0, 10, 10]]]
    ap = (51 * 1.0 + 50 * 2 / 3) / 101
    assert average_precision(pred, scores, gt, 0.5) == pytest.approx(ap)
    m = detection_metrics(pred, scores, gt)
    assert m["map50"] == pytest.approx(ap, abs=1e-6)
    assert m["map25"] == pytest.approx(ap, abs=1e-6)
    assert m["recall25"] == pytest.approx(1.0) and m["miou"] == pytest.approx(1.0)


def test_iou_threshold_and_images_without_lesions():
    # a box of IoU 1/3 with its lesion: a hit at .25, a miss at .5; the lesion-free image's
    # higher-scored box is a false positive before it
    pred = [[[0, 0, 10, 10]], [[5, 0, 15, 10]]]
    scores = [[0.9], [0.5]]
    gt = [np.zeros((0, 4)), [[0, 0, 10, 10]]]
    m = detection_metrics(pred, scores, gt)
    assert m["map50"] == pytest.approx(0.0)
    assert m["map25"] == pytest.approx(average_precision(pred, scores, gt, 0.25), abs=1e-6)
    assert m["map25"] == pytest.approx(0.5, abs=1e-6)   # precision 1/2 at every recall point
    assert m["recall25"] == pytest.approx(1.0)
    assert m["miou"] == pytest.approx(1 / 3)
    assert np.isnan(mean_best_iou([[[0, 0, 1, 1]]], [np.zeros((0, 4))]))
    assert all(np.isnan(v) for v in detection_metrics([[[0, 0, 1, 1]]], [[0.5]],
                                                      [np.zeros((0, 4))]).values())


# ------------------------------------------------------------------------------ models

@pytest.mark.parametrize("name", ["resnet50", "convnextv2_tiny", "vit_base_patch16_dinov3",
                                  "efficientnet_b0"])
def test_backbone_builds_and_trains_a_step(name):
    torch.manual_seed(0)
    model, _ = build_detector(name, img_size=64, cfg=DetrConfig(layers=2))
    x = torch.rand(2, 1, 1, 64, 64)
    out = model(x)
    assert out["logits"].shape == (2, 1) and out["pred_boxes"].shape == (2, 3, 4)
    assert out["pred_obj"].shape == (2, 3) and len(out["aux"]) == 1
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()
    batch = {"label": torch.tensor([1, 0]),
             "boxes": [[np.array([[10, 12, 30, 40]], np.float32)], [np.zeros((0, 4))]]}
    losses = DetrCriterion()(out, batch, 64)
    assert set(losses) == {"loss", "cls", "bbox", "giou", "obj"}
    assert all(torch.isfinite(v) for v in losses.values())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    opt.step()


def test_detector_rejects_two_views():
    model, _ = build_detector("test_resnet", cfg=DetrConfig(layers=1))
    with pytest.raises(ValueError, match="one view per example"):
        model(torch.rand(1, 2, 1, 32, 32))


# -------------------------------------------------------------------- data and shards

def _square_cohort(root, mammoprep_fn):
    """One synthetic DICOM with a bright square drawn at a known box inside the breast,
    its label table, and its shards at 512."""
    cohort = root / "cohort"
    mammoprep_fn("synth", str(cohort), "--patients", "1", "--seed", "3", "--size", "600x480")
    from mammoprep.io.dicom import read_dicom

    src = sorted(cohort.rglob("*.dcm"))[0]
    rec = read_dicom(src)
    top = (1 << int(rec.meta["bits_stored"])) - 1
    px = (rec.pixels.astype(np.float64) * 0.4).astype(np.uint16)   # tissue below 40 %
    cy = px.shape[0] // 2
    fg_cols = np.flatnonzero(px[cy] > 0)
    cx = int(fg_cols.min() + 0.4 * (fg_cols.max() - fg_cols.min()))
    box = [cx - 20, cy - 16, cx + 20, cy + 16]               # xyxy, exclusive end
    px[box[1]:box[3], box[0]:box[2]] = top
    ds = pydicom.dcmread(src)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    ds.PhotometricInterpretation = "MONOCHROME2"
    for tag in ("PresentationLUTShape", "PixelPaddingValue", "RescaleSlope",
                "RescaleIntercept"):
        if tag in ds:
            delattr(ds, tag)
    ds.PixelData = px.tobytes()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    dst = root / "square" / "square.dcm"
    dst.parent.mkdir(parents=True)
    ds.save_as(dst, enforce_file_format=True)
    (root / "square" / "labels.csv").write_text(
        "path,patient,pathology,birads,boxes\n"
        f'square.dcm,P1,malignant,5,"[{box}]"\n')
    shards = root / "shards"
    mammoprep_fn("shard", str(root / "square"), "-o", str(shards), "--labels",
                 f"csv:{root / 'square' / 'labels.csv'}", "--size", "512", "--folds", "0",
                 "--allow-rejects", "-j", "1")
    return shards


@pytest.mark.parametrize("resize,flip", [("square", False), ("square", True),
                                         ("letterbox", False), ("letterbox", True)])
def test_box_encloses_the_square_after_shard_and_loader(tmp_path_factory, resize, flip):
    root = tmp_path_factory.getbasetemp() / "square-box"
    shards = (root / "shards") if (root / "shards" / "images.parquet").exists() else \
        _square_cohort(root, mammoprep)
    rows = read_manifest(shards)
    assert len(rows) == 1 and rows[0]["boxes"], rows
    examples, _ = plan_examples(rows, get_task("detection"), 1, unlabeled=True)
    stream = ShardStream(shards, examples, Preprocess(512, resize), train=flip,
                         flip_p=1.0 if flip else 0.0, shuffle_buffer=1)
    batch = next(iter(EpochLoader(stream, 1, workers=0, drop_last=False)))
    assert bool(batch["flipped"][0]) is flip
    img = batch["image"][0, 0, 0].numpy()
    (box,) = batch["boxes"][0][0]
    ys, xs = np.nonzero(img > 0.7 * img.max())
    seen = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
    assert np.abs(seen - box).max() <= 2.0, (seen, box)
    if not flip:  # and back: model input -> stored -> original DICOM pixels (predict's boxes)
        from mammotrain.tasks.detection import to_original

        back = to_original(Preprocess(512, resize), np.asarray([box]),
                            batch["transforms"][0][0])
        assert np.abs(back[0] - np.asarray(rows[0]["boxes_original"][0])).max() <= 1.0


def test_transform_invert_round_trip():
    from mammoprep.geometry import Transform

    for flipped in (False, True):
        t = Transform((100, 50, 400, 650), 0.5, flipped, (800, 500), (300, 150))
        b = np.array([[120.0, 80.0, 200.0, 160.0], [300.0, 500.0, 390.0, 640.0]])
        np.testing.assert_allclose(t.invert(t.apply(b)), b)


# -------------------------------------------------------------------------- learning

@pytest.fixture(scope="module")
def lesion_shards(tmp_path_factory):
    """40 synthetic patients at 256x208 with the flat label table (it carries the boxes)."""
    return build(tmp_path_factory.getbasetemp(), "det-shards", 40, 0, 128, folds=3,
                 per_shard=16, synth_size="256x208", labels="csv")


def test_detector_overfits_a_handful_of_lesion_images(lesion_shards):
    torch.manual_seed(0)
    size = 96
    rows = read_manifest(lesion_shards)
    task = get_task("detection")
    examples, _ = plan_examples(rows, task, 1)
    with_boxes = {f"{r['key']}.{r['view']}" for r in rows if r["boxes"]}
    chosen = [e for e in examples if e.uid in with_boxes][:8]
    assert len(chosen) == 8
    stream = ShardStream(lesion_shards, chosen, Preprocess(size), train=False)
    batch = next(iter(EpochLoader(stream, len(chosen), workers=0, drop_last=False)))
    # no dropout: the point is to memorise these images
    model, _ = build_detector("test_resnet", img_size=size, cfg=DetrConfig(dropout=0.0))
    crit = DetrCriterion()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-5)
    losses = []
    for _ in range(180):
        model.train()
        loss = crit(model(batch["image"]), batch, size)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        out = model(batch["image"])
    from mammotrain.detr_loss import cxcywh_to_xyxy

    boxes = list((cxcywh_to_xyxy(out["pred_boxes"]) * size).numpy())
    scores = list(out["pred_obj"].sigmoid().numpy())
    gt = [np.asarray(b[0]).reshape(-1, 4) for b in batch["boxes"]]
    m = detection_metrics(boxes, scores, gt)
    print(f"loss {losses[0]:.2f} -> {np.mean(losses[-10:]):.2f}; {m}")
    assert np.mean(losses[-10:]) < 0.3 * losses[0]
    assert m["recall25"] > 0.8


# ------------------------------------------------------------------------------- CLI

def test_cv_detection_and_predict(lesion_shards, tmp_path):
    out = tmp_path / "det"
    r = CliRunner().invoke(main, ["cv", "--task", "detection", "--shards", str(lesion_shards),
                                  "--out", str(out), "--folds", "1", "--patience", "1", *TINY])
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["views"] == 1 and cfg["lr"] == 1e-4 and cfg["patience"] == 1
    md = (out / "summary.md").read_text()
    assert "mAP@.25" in md and "R@.25" in md and "mIoU" in md and "Sensitivity" in md
    assert (out / "fold1" / "detections.png").exists() and (out / "roc.png").exists()
    import pyarrow.parquet as pq

    pred = pq.read_table(out / "fold1" / "predictions.parquet").to_pylist()
    assert pred and all(len(p["boxes"]) == 3 and len(p["box_scores"]) == 3 for p in pred)
    assert all(p["box_scores"] == sorted(p["box_scores"], reverse=True) for p in pred)
    metrics = json.loads((out / "fold1" / "metrics.json").read_text())
    assert {"map50", "map25", "recall25", "miou", "auc"} <= set(metrics)

    ck = out / "fold1" / "best.pt"
    p_out = tmp_path / "p" / "preds.parquet"
    r = CliRunner().invoke(main, ["predict", "--checkpoint", str(ck), "--shards",
                                  str(lesion_shards), "-o", str(p_out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    rows = pq.read_table(p_out).to_pylist()
    assert len(rows) == len(read_manifest(lesion_shards))      # every image, labelled or not
    assert any(r_["label"] == -1 for r_ in rows) and all(len(r_["boxes"]) == 3 for r_ in rows)
    assert p_out.with_suffix(".png").exists() and p_out.with_suffix(".metrics.json").exists()
    by_key = {(r_["key"], r_["view"]): r_ for r_ in read_manifest(lesion_shards)}
    for r_ in rows:  # boxes in the original DICOM's pixels, inside the image
        m = by_key[(r_["key"], r_["view"])]
        b = np.asarray(r_["boxes_original"])
        assert b.shape == (3, 4) and (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
        assert b[:, [0, 2]].max() <= m["original_cols"] and b[:, [1, 3]].max() <= m["original_rows"]


@pytest.mark.parametrize("args,code,message", [
    (["--views", "2"], 1, "views must be 1 for task detection"),
    (["--select", "map25", "--task", "density"], 1, "select must be auc, loss, last"),
])
def test_detection_option_errors(train_shards, tmp_path, args, code, message):
    base = ["cv", "--shards", str(train_shards), "--out", str(tmp_path / "o"), *TINY]
    if "--task" not in args:
        base += ["--task", "detection"]
    r = CliRunner().invoke(main, base + args)
    assert r.exit_code == code, r.output
    assert message in r.output


def test_predict_errors(tmp_path, train_shards):
    r = CliRunner().invoke(main, ["predict", "-c", __file__, "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "either --shards or --dicom" in r.output
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    r = CliRunner().invoke(main, ["predict", "-c", str(bad), "--shards", str(train_shards),
                                  "-o", str(tmp_path / "x.parquet")])
    assert r.exit_code == 1 and "not a mammotrain checkpoint" in r.output


def test_pooled_detection_beats_the_mean_box_baseline_only_when_boxes_follow_lesions():
    """Pooled AP over folds and the mean-box baseline: a detector that finds lesions at two
    different places beats one box at the other fold's mean lesion box; when every lesion
    sits at one place the baseline is as good as the detector."""
    from mammotrain.detection_metrics import detection_metrics, mean_box_baseline

    def rows(where):
        out = []
        for fold, (x, y) in enumerate(where):
            for i in range(4):
                gt = [[x, y, x + 10.0, y + 10.0]] if i < 2 else []
                box = gt[0] if gt else [0.0, 0.0, 5.0, 5.0]
                out.append({"fold": fold, "boxes": [box], "box_scores": [0.9 if gt else 0.2],
                            "gt_boxes": gt})
        return out

    def pooled(r):
        return detection_metrics([x["boxes"] for x in r], [x["box_scores"] for x in r],
                                 [x["gt_boxes"] for x in r])

    moved = rows([(10.0, 10.0), (40.0, 40.0)])
    assert pooled(moved)["map50"] == pytest.approx(1.0) and mean_box_baseline(moved) == 0.0
    assert mean_box_baseline(rows([(10.0, 10.0), (10.0, 10.0)])) == pytest.approx(1.0)
    assert np.isnan(mean_box_baseline(rows([(10.0, 10.0)])))
