"""One trainer for every task: folds, epochs, checkpoints, evaluation, predictions.

Layout of a run folder ``OUT``::

    OUT/config.json            resolved TrainConfig, versions, example counts and exclusions
    OUT/foldK/split.json       patient-disjoint train/val/test uids of test fold K
    OUT/foldK/checkpoint.pt    last epoch (model, optimiser, scheduler, scaler, RNG, history)
    OUT/foldK/best.pt          weights of the epoch selected on the validation split
    OUT/foldK/history.jsonl    one line per epoch (train loss, val loss/metrics, lr, time)
    OUT/foldK/history.csv, OUT/foldK/tensorboard/   the same curves (mammotrain.curves)
    OUT/foldK/best.safetensors + best.json   self-contained model file
                                             (mammotrain.engine.checkpoint)
    OUT/foldK/train_log.rankR.jsonl   per-rank steps, examples and shards read (DDP)
    OUT/foldK/predictions.parquet     test-fold predictions of the selected model
    OUT/foldK/metrics.json     test-fold metrics
    OUT/foldK/gradcam.png      Grad-CAM overlays of a few test examples (classification)
    OUT/foldK/detections.png   predicted vs true boxes on a few test images (detection)

The report (summary table, ROC curves, energy-/vendor-wise AUC) is written by
:mod:`mammotrain.report` from the fold folders. Runs under ``torchrun`` use DDP
(:mod:`mammotrain.engine.distributed`).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import RESUME_FREE, TrainConfig
from ..curves import log_epoch
from ..data import (Example, Split, folds_in, plan_examples, read_manifest, regroup_folds,
                    split_examples)
from ..ema import ModelEma
from ..jsonio import append_jsonl, write_json
from ..report import summary_line, write_run_report
from ..splits import OFFICIAL_TEST_FOLD
from ..stream import EpochLoader, ShardStream
from ..tasks import build_task_model, get_task
from .checkpoint import (load_training_state, save_best_weights, save_training_state,
                         versions)
from .distributed import Dist, agree, gather_predictions, init_distributed, rank_device
from .evaluate import (eval_loader, evaluate_fold, fmt, predict, selection_score,
                       selection_text)
from ..schedule import build_scheduler
from .stepping import OptimStep, autocast, compile_model, progress


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)


def prepare(cfg: TrainConfig) -> tuple[list[dict], list[Example], Any, list[int]]:
    """Manifest rows, the task's examples, the plan report and the folds to run."""
    task = get_task(cfg.task)
    rows = read_manifest(cfg.shards)
    examples, plan = plan_examples(rows, task, cfg.views, need_fold=cfg.split == "kfold")
    try:
        examples = regroup_folds(examples, plan, cfg.split_by, cfg.split)
    except ValueError as exc:  # official: no split, or an empty part
        raise ValueError(f"{cfg.shards}/images.parquet: {exc}") from None
    if cfg.split == "official":
        available = [OFFICIAL_TEST_FOLD]
    elif cfg.split_by == "fold":
        available = folds_in(rows)
        if not available:
            raise ValueError(f"{cfg.shards}/images.parquet: no fold assigned; shard with "
                             "--folds >= 2")
    else:
        available = sorted(plan.fold_names)
        if len(available) < 2:
            raise ValueError(f"{cfg.shards}/images.parquet: --split-by {cfg.split_by} needs "
                             "examples of at least 2 groups to leave one out, found "
                             f"{list(plan.fold_names.values()) or 'none'}")
    folds = list(cfg.folds) if cfg.folds is not None else available
    bad = [f for f in folds if f not in available]
    if bad:
        raise ValueError(f"folds {bad} not in {cfg.shards}/images.parquet (folds: {available})")
    return rows, examples, plan, folds


def write_run_config(cfg: TrainConfig, plan, folds: list[int], resume: bool) -> None:
    """``OUT/config.json``; with ``resume`` the stored config must match (except
    :data:`~mammotrain.config.RESUME_FREE` fields)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    if resume and path.exists():
        old = json.loads(path.read_text()).get("config", {})
        new = cfg.to_dict()
        absent = TrainConfig().to_dict()  # fields added since the run was stored: defaults
        diff = sorted(k for k in new
                      if k not in RESUME_FREE and old.get(k, absent[k]) != new[k])
        if diff:
            raise ValueError(f"{path}: --resume with other options than the stored run "
                             f"({', '.join(f'{k}: {old.get(k)!r} -> {new[k]!r}' for k in diff)})")
    write_json(path, {"config": cfg.to_dict(), "versions": versions(), "folds": folds,
                      "plan": plan.to_dict()})


# ---------------------------------------------------------------------------- training

@dataclass
class FitState:
    """What a fold's training changes and ``checkpoint.pt`` keeps: the model and its
    optimiser, scheduler, scaler and EMA, the next epoch (0-based), the selection so far."""

    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    scaler: Any
    ema: ModelEma | None = None
    start: int = 0
    best_score: tuple[float, float] = (-math.inf, -math.inf)
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: bool = False

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights validated, selected and saved (the EMA's where there is one)."""
        return self.ema.module if self.ema is not None else self.model


def build_fit_state(cfg: TrainConfig, device: torch.device, dist: Dist,
                    log: Callable[[str], None]) -> FitState:
    """The model of ``cfg`` on ``device`` with a fresh AdamW, scheduler and grad scaler."""
    model, reports = build_task_model(cfg)
    for r in reports:
        if dist.main:
            log(f"pretrained: {r.describe()}")
    model.to(device)
    if cfg.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        model.channels_last = True
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(cfg, optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=bool(
        cfg.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()))
    return FitState(model, optimizer, scheduler, scaler)


def start_fold_folder(out: Path, split: Split, plan, test_fold: int, resume: bool,
                      log: Callable[[str], None]) -> None:
    """Rank 0: ``out`` emptied of an earlier run's fold files (unless resuming) and
    ``split.json`` written."""
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        for name in ("checkpoint.pt", "best.pt", "history.jsonl", "metrics.json",
                     "predictions.parquet"):
            (out / name).unlink(missing_ok=True)
        for p in out.glob("train_log.rank*.jsonl"):
            p.unlink()
    group = plan.fold_names.get(test_fold)
    write_json(out / "split.json", {"test_fold": test_fold, "split_by": plan.split_by,
                                    "split": plan.split, "test_group": group, **{
        k: [e.uid for e in getattr(split, k)] for k in ("train", "val", "test")}})
    what = "official split" if plan.split == "official" else plan.split_by
    log(split.describe() + (f" [test: {what} {group}]" if group else ""))


@dataclass
class FoldTrainer:
    """The epochs of one test fold: train, validate (all ranks), select and checkpoint
    (rank 0), early stopping."""

    cfg: TrainConfig
    test_fold: int
    out: Path
    state: FitState
    stream: ShardStream
    loader: EpochLoader
    val_loader: EpochLoader | None
    device: torch.device
    dist: Dist
    log: Callable[[str], None]
    select: str
    selection: str
    seen_patients: list[str]

    def __post_init__(self) -> None:
        self.task = get_task(self.cfg.task)
        self.criterion = self.task.make_criterion(self.cfg.size, self.cfg.det_lambda)

    def run(self, net: torch.nn.Module, stepper: OptimStep) -> None:
        for epoch in range(self.state.start, self.cfg.epochs):
            if self.state.stopped:
                break
            t0 = time.time()
            steps, seen, loss_sum = self.train_epoch(net, stepper, epoch)
            lr = self.state.optimizer.param_groups[0]["lr"]
            self.state.scheduler.step()
            self.log_rank(epoch, steps, seen)
            rec = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "steps": steps,
                   "lr": lr}
            val = None
            if self.val_loader is not None:  # all ranks predict their share, rank 0 the union
                val = gather_predictions(predict(self.state.eval_model, self.val_loader,
                                                 self.cfg, self.device), self.dist)
            if self.dist.main:
                self.end_epoch(epoch, rec, val, t0, steps, seen)
            self.state.stopped = agree(self.state.stopped, self.dist, self.device)
            self.dist.barrier()

    def train_epoch(self, net: torch.nn.Module, stepper: OptimStep, epoch: int
                    ) -> tuple[int, int, float]:
        """One pass over the training loader: (steps, examples, summed loss)."""
        self.loader.set_epoch(epoch)
        net.train()
        steps, seen, loss_sum = 0, 0, 0.0
        desc = f"fold {self.test_fold} epoch {epoch + 1}"
        for batch in progress(self.loader, self.dist.main, desc):
            x = batch["image"].to(self.device, non_blocking=True)
            with stepper.no_sync(steps):  # accumulation: DDP all-reduce on the last only
                with autocast(self.cfg, self.device):
                    loss = self.criterion(net(x), batch)["loss"]
                stepper.backward(loss, steps)  # clip, step, EMA every accum_steps batches
            steps += 1
            seen += len(batch["label"])
            loss_sum += float(loss.detach()) * len(batch["label"])
        return steps, seen, loss_sum

    def log_rank(self, epoch: int, steps: int, seen: int) -> None:
        """``train_log.rankR.jsonl``: what this rank read in the epoch."""
        read = self.stream.epoch_plan()[1]  # the shards this rank read (planned, per epoch)
        append_jsonl(self.out / f"train_log.rank{self.dist.rank}.jsonl",
                     {"fold": self.test_fold, "epoch": epoch + 1, "rank": self.dist.rank,
                      "world": self.dist.world, "steps": steps, "examples": seen,
                      "expected_steps": self.loader.steps, "shards": len(read),
                      "shard_bytes": sum((Path(self.cfg.shards) / s).stat().st_size
                                         for s in read)})

    def end_epoch(self, epoch: int, rec: dict[str, Any], val: dict[str, Any] | None,
                  t0: float, steps: int, seen: int) -> None:
        """Rank 0: score the validation predictions, keep the best weights, write the
        history and ``checkpoint.pt``, log, decide on early stopping."""
        st, cfg = self.state, self.cfg
        improved = False
        if val is not None:
            vm = self.task.compute_metrics(val)
            vm["loss"] = val["loss"]
            rec.update({f"val_{k}": v for k, v in vm.items()})
            score = selection_score(cfg, vm)
            if self.select == "last" or score > st.best_score:
                st.best_score, st.best_epoch, improved = score, epoch, True
        else:
            st.best_epoch, improved = epoch, True
        if improved:
            save_best_weights(self.out / "best.pt", st.eval_model, cfg, epoch, self.selection,
                              self.test_fold, self.seen_patients)
        rec["seconds"] = round(time.time() - t0, 2)
        st.stopped = bool(cfg.patience) and epoch - st.best_epoch >= cfg.patience
        rec["early_stop"] = st.stopped
        st.history.append(rec)
        append_jsonl(self.out / "history.jsonl", rec)
        log_epoch(self.out, rec)  # history.csv + TensorBoard events
        save_training_state(self.out / "checkpoint.pt", st, cfg, epoch,
                            selection=self.selection, test_fold=self.test_fold,
                            seen_patients=self.seen_patients)
        val_txt = (f" val loss {rec['val_loss']:.4f} {self.task.metric_label('auc')} "
                   f"{fmt(rec.get('val_auc'))}" if "val_loss" in rec else "")
        self.log(f"fold {self.test_fold} epoch {epoch + 1}/{cfg.epochs}: train loss "
                 f"{rec['train_loss']:.4f} ({steps} steps, {seen} examples){val_txt} "
                 f"{rec['seconds']:.1f}s{' *' if improved else ''}")
        if st.stopped:
            self.log(f"fold {self.test_fold}: early stop, no better validation score for "
                     f"{cfg.patience} epochs (best: epoch {st.best_epoch + 1})")


def train_fold(cfg: TrainConfig, test_fold: int, *, resume: bool = False,
               dist: Dist | None = None, log: Callable[[str], None] = print,
               prepared: tuple | None = None) -> dict[str, Any]:
    """Train on the training folds (minus validation patients), select the epoch on the
    validation split, evaluate it on ``test_fold``. Returns the test metrics (rank 0; other
    ranks return {}). ``cfg`` must be resolved (:meth:`TrainConfig.resolved`)."""
    dist = dist or Dist()
    out = Path(cfg.out) / f"fold{test_fold}"
    if resume and (out / "metrics.json").exists() and (out / "predictions.parquet").exists():
        if dist.main:
            log(f"fold {test_fold}: done earlier, kept ({out / 'metrics.json'})")
        return json.loads((out / "metrics.json").read_text())
    _, examples, plan, _ = prepared or prepare(cfg)
    split = split_examples(examples, test_fold, cfg.val_fraction, cfg.seed)
    if not split.train or not split.test:
        raise ValueError(f"fold {test_fold}: empty split ({split.describe()})")
    device = rank_device(cfg.device, dist)
    seed_everything(cfg.seed * 1000 + test_fold, cfg.deterministic)
    if dist.main:
        start_fold_folder(out, split, plan, test_fold, resume, log)
    dist.barrier()

    stream = ShardStream(cfg.shards, split.train, cfg.preprocess(), train=True, seed=cfg.seed,
                         rank=dist.rank, world=dist.world, flip_p=cfg.flip_p,
                         shuffle_buffer=cfg.shuffle_buffer, balanced=cfg.balanced,
                         augment=cfg.augmentation())
    loader = EpochLoader(stream, cfg.batch_size, workers=cfg.workers,
                         max_steps=cfg.max_steps_per_epoch, pin_memory=device.type == "cuda")
    # every rank validates its shards' share; rank 0 gathers and scores (gather_predictions)
    val_loader = eval_loader(cfg, split.val, dist) if split.val else None
    if not split.val and dist.main:
        log(f"warning: fold {test_fold}: no validation patients (val_fraction "
            f"{cfg.val_fraction:g}, {len({e.patient for e in split.train})} training patients); "
            "the last epoch is used, not one selected on validation")
    # patients the weights have seen (training + validation): predict warns on them
    seen_patients = sorted({e.patient for e in split.train + split.val})

    state = build_fit_state(cfg, device, dist, log)
    trainer = FoldTrainer(cfg, test_fold, out, state, stream, loader, val_loader, device, dist,
                          log, cfg.select if split.val else "last",
                          selection_text(cfg, bool(split.val)), seen_patients)
    ck: dict[str, Any] = {}
    if resume and (out / "checkpoint.pt").exists():
        ck = load_training_state(out / "checkpoint.pt", state)
        if dist.main:
            log(f"fold {test_fold}: resumed after epoch {state.start}")
    if cfg.ema:  # averaged weights are validated, selected and saved (mammotrain.ema)
        state.ema = ModelEma(state.model, cfg.ema)
        if state.start > 0 and ck.get("ema") is not None:
            state.ema.load_state_dict(ck["ema"])
    net = state.model
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            state.model, device_ids=[device.index] if device.type == "cuda" else None)
    net = compile_model(net, cfg.compile, log if dist.main else None)
    stepper = OptimStep(net, state.model, state.optimizer, state.scaler,
                        accum=cfg.accum_steps, clip_grad=cfg.clip_grad, ema=state.ema,
                        total=loader.steps)
    trainer.run(net, stepper)

    result: dict[str, Any] = {}
    if dist.main:
        result = evaluate_fold(cfg, state.model, split, examples, device, out, log,
                               trainer.selection)
    dist.barrier()
    return result


def run_cv(cfg: TrainConfig, *, resume: bool = False, log: Callable[[str], None] = print,
           report: bool = True) -> dict[str, Any]:
    """Every requested fold of ``cfg`` (resolved here), then the run report (rank 0)."""
    cfg = cfg.resolved().validate()
    dist = init_distributed(cfg.device, cfg.dist_timeout)
    prepared = prepare(cfg)
    _, _, plan, folds = prepared
    if dist.main:
        write_run_config(cfg, plan, folds, resume)
        log(plan.describe())
        log(f"config: task {cfg.task}, {cfg.views}-view, {cfg.backbone} "
            f"({'shared' if cfg.shared else 'independent'}), {cfg.size}px, {cfg.epochs} epochs, "
            f"batch {cfg.batch_size}, lr {cfg.lr:g}, device {cfg.device}, world {dist.world}")
    dist.barrier()
    results = {}
    for f in folds:
        results[f] = train_fold(cfg, f, resume=resume, dist=dist, log=log, prepared=prepared)
    summary: dict[str, Any] = {}
    if dist.main and report:
        summary = write_run_report(cfg.out)
        log(summary_line(summary))
        log(f"report: {Path(cfg.out) / 'summary.md'}")
    dist.barrier()
    return summary
