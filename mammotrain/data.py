"""Streaming two-view / single-view data from mammoprep shards.

Plan from the manifest, stream from the tars::

    images.parquet --plan_examples--> [Example] --split_examples--> train / val / test
    shard tars --webdataset--> select (this rank's examples) --> shuffle (raw bytes, seeded)
               --> decode 16-bit PNG --> preprocess (resize, flip, normalise) --> collate
               --> EpochLoader: exactly `steps` batches of `batch_size` per epoch and rank

* An :class:`Example` is one breast (two-view: CC and MLO of the same breast) or one stored
  image (single-view). Its label comes from the task spec (the manifest's ``label_<task>``
  column, the rule of :func:`mammoprep.labels.task_labels`); examples whose label is null,
  breasts with one view in two-view mode and images without a fold are excluded, and every
  exclusion is counted (:class:`PlanReport`).
* Splits are patient-grouped: test = the test fold; validation = a stratified fraction of
  the *training folds'* patients (models are selected on it, never on the test fold).
* Distributed: the epoch's example list (permuted with ``(seed, epoch)``) is padded to a
  multiple of the world size and dealt out round-robin, so every rank streams the same number
  of examples; each rank reads the shards holding its examples and decodes only those. The
  epoch length (steps) comes from the manifest counts, not from the stream, and
  :class:`EpochLoader` yields exactly that many batches on every rank (no DDP hang from
  uneven shards, workers or a skipped corrupt sample).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mammoprep import boxes as box_ops
from mammoprep.png import decode_png16

from .tasks import TaskSpec

VIEWS = ("cc", "mlo")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_MEAN, GRAY_STD = 0.449, 0.226  # means of the ImageNet values, for in_chans = 1

REQUIRED_COLUMNS = ("key", "shard", "view", "patient", "fold")


class DataError(ValueError):
    """A problem with the shard folder or its manifests (the message names the file)."""


# --------------------------------------------------------------------------- manifest

def read_manifest(shards: str | Path) -> list[dict[str, Any]]:
    """Rows of ``SHARDS/images.parquet`` (one per stored image) as dicts."""
    import pyarrow.parquet as pq

    path = Path(shards) / "images.parquet"
    if not path.exists():
        raise DataError(f"{path}: manifest not found; is {shards} a folder written by "
                        "`mammoprep shard`?")
    table = pq.read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: columns {missing} missing (have {table.column_names})")
    return table.to_pylist()


def folds_in(rows: Iterable[dict[str, Any]]) -> list[int]:
    """Sorted distinct non-null folds of manifest rows."""
    return sorted({int(r["fold"]) for r in rows if r.get("fold") is not None})


@dataclass(frozen=True)
class Example:
    """One example: a breast (two-view, ``views = ('cc', 'mlo')``) or one image
    (single-view, ``views = ('cc',)`` or ``('mlo',)``). ``uid`` is the key (two-view) or
    ``KEY.VIEW`` (single-view)."""

    uid: str
    key: str
    views: tuple[str, ...]
    label: int
    patient: str
    fold: int | None
    shard: str
    energy: str | None = None
    manufacturer: str | None = None


@dataclass
class PlanReport:
    """What :func:`plan_examples` kept and why it dropped the rest.

    unit: 'breast' (two-view) or 'image' (single-view); excluded counts are in that unit:
    ``label_null`` (label null for the task), ``one_view`` (two-view: a breast with only CC
    or only MLO), ``no_fold`` (no fold assigned), ``label_conflict`` (CC and MLO rows disagree).
    """

    task: str
    views: int
    unit: str
    images: int
    candidates: int
    examples: int
    excluded: dict[str, int] = field(default_factory=dict)
    class_counts: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_counts"] = {str(k): v for k, v in sorted(self.class_counts.items())}
        return d

    def describe(self) -> str:
        ex = ", ".join(f"{k} {v}" for k, v in sorted(self.excluded.items()) if v) or "none"
        return (f"{self.task} {self.views}-view: {self.examples} {self.unit}s of "
                f"{self.candidates} ({self.images} images); excluded: {ex}; classes "
                f"{dict(sorted(self.class_counts.items()))}")


def plan_examples(rows: Sequence[dict[str, Any]], task: TaskSpec, views: int,
                  unlabeled: bool = False) -> tuple[list[Example], PlanReport]:
    """Manifest rows -> examples of ``task`` in ``views``-view mode (1 or 2), sorted by uid.

    unlabeled: keep examples without a label (label -1) or fold (inference on new images:
    ``mammotrain predict``) instead of excluding them."""
    if views not in (1, 2):
        raise ValueError(f"views must be 1 or 2, got {views!r}")
    by_key: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        by_key[r["key"]][str(r["view"]).lower()] = r
    excluded: Counter = Counter()
    out: list[Example] = []

    def make(uid, key, vs, label, r):
        return Example(uid, key, vs, label, r["patient"],
                       None if r.get("fold") is None else int(r["fold"]), r["shard"],
                       r.get("energy"), r.get("manufacturer"))

    for key in sorted(by_key):
        per_view = by_key[key]
        if views == 1:
            for v in sorted(per_view):
                r = per_view[v]
                label = task.label(r)
                if unlabeled:
                    out.append(make(f"{key}.{v}", key, (v,), -1 if label is None else label, r))
                elif label is None:
                    excluded["label_null"] += 1
                elif r.get("fold") is None:
                    excluded["no_fold"] += 1
                else:
                    out.append(make(f"{key}.{v}", key, (v,), label, r))
            continue
        labels = {v: task.label(r) for v, r in per_view.items()}
        first = per_view[sorted(per_view)[0]]
        if unlabeled and all(v in per_view for v in VIEWS):
            lab = labels[VIEWS[0]]
            out.append(make(key, key, VIEWS, -1 if lab is None else lab, first))
        elif unlabeled:
            excluded["one_view"] += 1
        elif all(lab is None for lab in labels.values()):
            excluded["label_null"] += 1
        elif len({lab for lab in labels.values()}) > 1:
            excluded["label_conflict"] += 1
        elif not all(v in per_view for v in VIEWS):
            excluded["one_view"] += 1
        elif first.get("fold") is None:
            excluded["no_fold"] += 1
        else:
            out.append(make(key, key, VIEWS, labels[VIEWS[0]], first))
    candidates = len(by_key) if views == 2 else len(rows)
    report = PlanReport(task.name, views, "breast" if views == 2 else "image", len(rows),
                        candidates, len(out), dict(excluded),
                        dict(Counter(e.label for e in out)))
    return out, report


@dataclass
class Split:
    """Patient-disjoint train / val / test examples for one test fold."""

    test_fold: int
    train: list[Example]
    val: list[Example]
    test: list[Example]

    def describe(self) -> str:
        def part(xs):
            c = Counter(e.label for e in xs)
            return (f"{len(xs)} ({len({e.patient for e in xs})} patients, classes "
                    f"{dict(sorted(c.items()))})")
        return (f"fold {self.test_fold}: train {part(self.train)}, val {part(self.val)}, "
                f"test {part(self.test)}")

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split_examples(examples: Sequence[Example], test_fold: int, val_fraction: float = 0.2,
                   seed: int = 0) -> Split:
    """Test = ``fold == test_fold``; validation = ``val_fraction`` of the other folds'
    patients, drawn per stratum (a patient's highest label) with ``(seed, test_fold)``;
    train = the rest. No patient is in two parts."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    test = [e for e in examples if e.fold == test_fold]
    pool = [e for e in examples if e.fold != test_fold]
    strata: dict[int, set[str]] = defaultdict(set)
    top: dict[str, int] = {}
    for e in pool:
        top[e.patient] = max(top.get(e.patient, -1), e.label)
    for p, lab in top.items():
        strata[lab].add(p)
    rng = np.random.default_rng([seed, test_fold, 7])
    val_patients: set[str] = set()
    for lab in sorted(strata):
        ps = sorted(strata[lab])
        rng.shuffle(ps)
        n = int(round(val_fraction * len(ps)))
        if n == 0 and val_fraction > 0 and len(ps) >= 3:
            n = 1
        val_patients.update(ps[:n])
    train = [e for e in pool if e.patient not in val_patients]
    val = [e for e in pool if e.patient in val_patients]
    return Split(test_fold, train, val, test)


# -------------------------------------------------------------------------- preprocess

@dataclass(frozen=True)
class Preprocess:
    """Per-view image preparation (a pure function of its inputs and the flip decision).

    size: model input, square ``size x size`` pixels.
    resize: 'square' (stretch to the square, as in LUMINA) or 'letterbox' (keep the aspect
        ratio, pad with 0 = background).
    intensity: 'bits' (divide by ``2**bits - 1``, the image's bit depth from the sample JSON:
        ``value_bits`` when present, else ``bits``; harmonised shards record the reference's
        depth) or 'u16' (divide by 65535).

    The output stays one grayscale channel in [0, 1]: replication to 3 channels and the
    ImageNet mean/std are applied on the device by the model's :class:`InputNorm` (3x less
    memory and inter-process traffic in the loader).
    """

    size: int = 224
    resize: str = "square"
    intensity: str = "bits"

    def __post_init__(self):
        if self.resize not in ("square", "letterbox"):
            raise ValueError(f"resize must be 'square' or 'letterbox', got {self.resize!r}")
        if self.intensity not in ("bits", "u16"):
            raise ValueError(f"intensity must be 'bits' or 'u16', got {self.intensity!r}")
        if self.size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {self.size}")

    def __call__(self, px: np.ndarray, bits: int | None, boxes, flip: bool
                 ) -> tuple[torch.Tensor, np.ndarray]:
        """``uint16 [H, W]`` -> (float32 ``[1, size, size]`` in [0, 1], boxes float32
        ``[N, 4]`` xyxy in input pixels)."""
        img = to_unit(px, bits if self.intensity == "bits" else 16)
        fit = resize_square if self.resize == "square" else letterbox
        img, (sx, sy, dx, dy) = fit(img, self.size)
        b = box_ops.scale(boxes if boxes is not None else np.zeros((0, 4)), sx, sy, dx, dy)
        if flip:
            img = img.flip(-1)
            b = box_ops.hflip(b, self.size)
        return img[None], b.astype(np.float32)


    def to_stored(self, boxes, stored_hw: tuple[int, int]) -> np.ndarray:
        """Boxes ``[N, 4]`` xyxy at the model input (no flip) -> pixels of the stored image
        of size ``stored_hw`` (rows, cols): the inverse of this resize."""
        sx, sy, dx, dy = fit_mapping(stored_hw, self.size, self.resize)[:4]
        return box_ops.unscale(boxes, sx, sy, dx, dy)


def fit_mapping(hw: tuple[int, int], size: int, resize: str
                ) -> tuple[float, float, float, float, int, int]:
    """How an image of ``hw`` (rows, cols) is fitted into ``size x size``: box mapping
    ``(sx, sy, dx, dy)`` for :func:`mammoprep.boxes.scale` and the resized ``(rows, cols)``
    before padding. 'square' stretches; 'letterbox' keeps the aspect ratio, centred."""
    h, w = hw
    if resize == "square":
        return size / w, size / h, 0.0, 0.0, size, size
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    return nw / w, nh / h, float((size - nw) // 2), float((size - nh) // 2), nh, nw


def to_unit(px: np.ndarray, bits: int | None) -> torch.Tensor:
    """``uint16 [H, W]`` -> float32 ``[H, W]`` in [0, 1]: ``px / (2**bits - 1)`` (16 if None)."""
    maxv = float((1 << int(bits or 16)) - 1)
    return torch.from_numpy(px.astype(np.float32, copy=False)).div_(maxv).clamp_(0.0, 1.0)


def _resize(img: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[H, W]``; antialiased where it shrinks (same as plain bilinear
    where it enlarges, and cheaper)."""
    shrink = hw[0] < img.shape[0] or hw[1] < img.shape[1]
    return F.interpolate(img[None, None], size=hw, mode="bilinear", align_corners=False,
                         antialias=shrink)[0, 0]


def resize_square(img: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[float, ...]]:
    """float ``[H, W]`` -> ``[size, size]`` (bilinear); returns the box mapping
    ``(sx, sy, dx, dy)`` for :func:`mammoprep.boxes.scale`."""
    sx, sy, dx, dy, _, _ = fit_mapping(tuple(img.shape), size, "square")
    return _resize(img, (size, size)), (sx, sy, dx, dy)


def letterbox(img: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[float, ...]]:
    """float ``[H, W]`` -> ``[size, size]``: aspect kept, longer side = size, centred, zero
    padded; returns the box mapping ``(sx, sy, dx, dy)``."""
    sx, sy, dx, dy, nh, nw = fit_mapping(tuple(img.shape), size, "letterbox")
    out = img.new_zeros((size, size))
    out[int(dy):int(dy) + nh, int(dx):int(dx) + nw] = _resize(img, (nh, nw))
    return out, (sx, sy, dx, dy)


def normalize(img: torch.Tensor, in_chans: int) -> torch.Tensor:
    """float ``[..., 1, H, W]`` in [0, 1] -> ``[..., C, H, W]``: replicated to 3 channels with
    ImageNet mean/std, or one channel with the means of those values."""
    if in_chans == 1:
        return (img - GRAY_MEAN) / GRAY_STD
    mean = img.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = img.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (img - mean) / std


# ----------------------------------------------------------------------------- stream

def _select(src: Iterator[dict], wanted: dict[str, Counter]) -> Iterator[tuple[str, dict]]:
    """Raw tar samples -> ``(uid, sample)`` for this rank's examples (repeated as often as
    the epoch list holds the uid: padding)."""
    for sample in src:
        for uid, n in wanted.get(sample["__key__"], {}).items():
            for _ in range(n):
                yield uid, sample


def _shuffle(src: Iterator, buffer: int, rng: np.random.Generator) -> Iterator:
    """Seeded buffer shuffle (applied to raw bytes, before decoding)."""
    buf: list = []
    for item in src:
        buf.append(item)
        if len(buf) >= buffer:
            j = int(rng.integers(len(buf)))
            buf[j], buf[-1] = buf[-1], buf[j]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


def _decode(src: Iterator[tuple[str, dict]], examples: dict[str, Example], prep: Preprocess,
            flip_p: float, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
    for uid, sample in src:
        ex = examples[uid]
        doc = json.loads(sample["json"]) if "json" in sample else {}
        flip = bool(flip_p > 0 and rng.random() < flip_p)  # one coin per example, all views
        image = torch.empty((len(ex.views), 1, prep.size, prep.size), dtype=torch.float32)
        boxes, transforms = [], []
        for i, v in enumerate(ex.views):
            name = f"{v}.png"
            if name not in sample:
                raise DataError(f"{sample.get('__url__')}: {sample['__key__']}.{name} listed in "
                                "images.parquet is missing from the shard")
            px = decode_png16(sample[name])
            info = (doc.get("images") or {}).get(v, {})
            bits = info.get("value_bits") or info.get("bits") or doc.get("bits")
            image[i], b = prep(px, bits, (doc.get("boxes") or {}).get(v), flip)
            boxes.append(b)
            # the shard's original -> stored transform (it carries stored_size)
            transforms.append((doc.get("transform") or {}).get(v)
                              or {"stored_size": list(px.shape)})
        yield {"image": image, "label": ex.label, "uid": uid, "key": ex.key,
               "boxes": boxes, "transforms": transforms, "flipped": flip}


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Examples -> batch: ``image`` float32 ``[B, V, 1, S, S]`` in [0, 1] (grayscale; see
    :class:`Preprocess`), ``label`` int64 ``[B]`` (-1 = unlabelled, inference only),
    ``uid``/``key`` lists of str, ``boxes`` list (B) of lists (V) of float32 ``[N, 4]``,
    ``transforms`` list (B) of lists (V) of the shard JSON's original -> stored transform
    (:class:`mammoprep.boxes.Transform` as a dict; at least ``stored_size``),
    ``flipped`` bool ``[B]``."""
    return {"image": torch.stack([s["image"] for s in samples]),
            "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
            "uid": [s["uid"] for s in samples], "key": [s["key"] for s in samples],
            "boxes": [s["boxes"] for s in samples],
            "transforms": [s["transforms"] for s in samples],
            "flipped": torch.tensor([s["flipped"] for s in samples], dtype=torch.bool)}


class ShardStream(torch.utils.data.IterableDataset):
    """Examples streamed from the shard tars with webdataset (one rank's share).

    Each ``__iter__`` is one epoch: the epoch list (all examples, permuted with ``(seed,
    epoch)`` when ``train``; padded to a multiple of ``world`` by repeating its head) is dealt
    round-robin to ranks; this rank reads only the shards holding its examples (shard order
    shuffled per epoch when training, split across DataLoader workers), keeps its examples,
    shuffles them in a seeded buffer of raw bytes, then decodes and preprocesses. Yields
    dicts as taken by :func:`collate`; ``len()`` = examples per rank per epoch.

    handler: webdataset error handler for unreadable tar members (default: raise).
    """

    def __init__(self, root: str | Path, examples: Sequence[Example], prep: Preprocess, *,
                 train: bool, seed: int = 0, rank: int = 0, world: int = 1, flip_p: float = 0.5,
                 shuffle_buffer: int = 64, handler: Callable | None = None):
        super().__init__()
        if not examples:
            raise DataError(f"{root}: no examples to stream (empty split)")
        self.root = Path(root)
        self.examples = {e.uid: e for e in examples}
        if len(self.examples) != len(examples):
            raise DataError(f"{root}: duplicate example uids")
        self.prep = prep
        self.train, self.seed, self.rank, self.world = train, seed, rank, world
        self.flip_p = flip_p if train else 0.0
        self.shuffle_buffer = shuffle_buffer
        self.handler = handler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.examples) / self.world)

    def epoch_uids(self) -> list[str]:
        """This rank's uids for the current epoch (padded; equal length on every rank)."""
        uids = sorted(self.examples)
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, 11])
            uids = [uids[i] for i in rng.permutation(len(uids))]
        total = len(self) * self.world
        uids = (uids * math.ceil(total / len(uids)))[:total]
        return uids[self.rank::self.world]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        info = torch.utils.data.get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:
            torch.set_num_threads(1)
        wanted: dict[str, Counter] = defaultdict(Counter)
        for uid in self.epoch_uids():
            wanted[self.examples[uid].key][uid] += 1
        shards = sorted({self.examples[u].shard for c in wanted.values() for u in c})
        if self.train:
            order = np.random.default_rng([self.seed, self.epoch, self.rank, 13]).permutation(
                len(shards))
            shards = [shards[i] for i in order]
        mine = shards[wid::nworkers]
        if not mine:
            return iter(())
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, wid, int(self.train)])
        stages: list = [wds.SimpleShardList([str(self.root / s) for s in mine]),
                        wds.tarfile_to_samples(handler=self.handler or wds.reraise_exception),
                        partial(_select, wanted=wanted)]
        if self.train and self.shuffle_buffer > 1:
            stages.append(partial(_shuffle, buffer=self.shuffle_buffer, rng=rng))
        stages.append(partial(_decode, examples=self.examples, prep=self.prep,
                              flip_p=self.flip_p, rng=rng))
        return iter(wds.DataPipeline(*stages))


# ------------------------------------------------------------------------ epoch loader

def _cat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    if len(parts) == 1:
        return parts[0]
    out = {}
    for k, v in parts[0].items():
        out[k] = torch.cat([p[k] for p in parts]) if torch.is_tensor(v) else [
            x for p in parts for x in p[k]]
    return out


def _take(batch: dict[str, Any], a: int, b: int) -> dict[str, Any]:
    return {k: v[a:b] for k, v in batch.items()}


def rebatch(batches: Iterable[dict[str, Any]], size: int) -> Iterator[dict[str, Any]]:
    """Batches of any sizes (one per worker at a time) -> batches of exactly ``size``; the
    remainder comes last."""
    buf: list[dict[str, Any]] = []
    n = 0
    for b in batches:
        buf.append(b)
        n += len(b["label"])
        while n >= size:
            whole = _cat(buf)
            yield _take(whole, 0, size)
            rest = _take(whole, size, n)
            n -= size
            buf = [rest] if n else []
    if n:
        yield _cat(buf)


class EpochLoader:
    """Exactly :attr:`steps` batches per epoch from a :class:`ShardStream`.

    steps: from the manifest count of this rank's examples ``n``: training
    (``drop_last``) ``max(1, n // batch_size)``, evaluation ``ceil(n / batch_size)``; capped
    by ``max_steps``. Training restarts the stream if it ends early (so every rank runs the
    same number of steps); evaluation never repeats an example.
    """

    def __init__(self, stream: ShardStream, batch_size: int, *, workers: int = 0,
                 drop_last: bool | None = None, max_steps: int | None = None,
                 pin_memory: bool = False):
        self.stream = stream
        self.batch_size = int(batch_size)
        self.drop_last = stream.train if drop_last is None else drop_last
        n = len(stream)
        steps = max(1, n // self.batch_size) if self.drop_last else math.ceil(n / self.batch_size)
        self.steps = min(steps, max_steps) if max_steps else steps
        self.loader = torch.utils.data.DataLoader(
            stream, batch_size=self.batch_size, collate_fn=collate, num_workers=workers,
            pin_memory=pin_memory, persistent_workers=False,
            prefetch_factor=2 if workers else None)
        self.seen = 0

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict[str, Any]]:
        produced = 0
        self.seen = 0
        while produced < self.steps:
            got = 0
            for batch in rebatch(self.loader, self.batch_size):
                got += 1
                produced += 1
                self.seen += len(batch["label"])
                yield batch
                if produced >= self.steps:
                    return
            if got == 0:
                raise DataError(f"{self.stream.root}: the stream yielded no examples")
            if not self.stream.train:
                return
