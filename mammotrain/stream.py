"""The webdataset stream of a split and its exact-step epochs.

shard tars --webdataset--> select (this rank's examples) --> shuffle (raw bytes, seeded)
--> decode 16-bit PNG --> preprocess (resize, flip, normalise) --> collate
--> :class:`EpochLoader`: exactly ``steps`` batches of ``batch_size`` per epoch and rank.
Shards, not examples, are split across ranks and loader workers (:func:`assign_shards`);
see :mod:`mammotrain.data` for the plan the stream reads.
"""

from __future__ import annotations

import heapq
import json
import math
from collections import Counter, defaultdict
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import webdataset as wds

from .augment import Augment, apply_view
from .data import DataError, Example, decode_png16
from .preprocess import Preprocess

def _select(src: Iterator[dict], wanted: dict[str, Counter],
            parts: dict[str, tuple[str, ...]] | None = None) -> Iterator[tuple[str, dict]]:
    """Raw tar samples -> ``(uid, sample)`` for this rank's examples (repeated as often as
    the epoch list holds the uid: padding). ``parts``: uid -> the sample keys of an example
    made of several samples (four-view exams: one per breast); it is yielded once all have
    been read, as ``{'__key__': uid, 'parts': {key: sample}}``."""
    parts = parts or {}
    pending: dict[str, dict[str, dict]] = {}
    for sample in src:
        for uid, n in wanted.get(sample["__key__"], {}).items():
            need = parts.get(uid)
            if need is not None:
                got = pending.setdefault(uid, {})
                got[sample["__key__"]] = sample
                if len(got) < len(need):
                    continue
                sample = {"__key__": uid, "__url__": sample.get("__url__"),
                          "parts": pending.pop(uid)}
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


def _view(sample: dict, v: str, prep: Preprocess, param) -> tuple[torch.Tensor, Any, dict]:
    """View ``v`` of a raw shard sample -> (image ``[1, rows, cols]``, boxes, the shard's
    original -> stored transform)."""
    doc = json.loads(sample["json"]) if "json" in sample else {}
    name = f"{v}.png"
    if name not in sample:
        raise DataError(f"{sample.get('__url__')}: {sample['__key__']}.{name} listed in "
                        "images.parquet is missing from the shard")
    px = decode_png16(sample[name])
    info = (doc.get("images") or {}).get(v, {})
    bits = (info.get("value_bits") or info.get("bits") or doc.get("value_bits")
            or doc.get("bits"))
    img, b = prep(px, bits, (doc.get("boxes") or {}).get(v), False)
    img, b = apply_view(img, b, param)
    # the shard's original -> stored transform (it carries stored_size)
    return img, b, ((doc.get("transform") or {}).get(v) or {"stored_size": list(px.shape)})


def _decode(src: Iterator[tuple[str, dict]], examples: dict[str, Example], prep: Preprocess,
            augment: Augment, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
    for uid, sample in src:
        ex = examples[uid]
        # flips and intensity shared by the views, affine per view (mammotrain.augment)
        params = augment.sample(rng, len(ex.views))
        image = torch.zeros((len(ex.views), 1, *prep.hw), dtype=torch.float32)
        boxes, transforms = [], []
        # (slot, sample, view); four-view: a missing side's slots stay zero
        slots = ([(i, sample, v) for i, v in enumerate(ex.views)] if not ex.sides else
                 [(2 * j + k, sample["parts"][side.key], v) for j, side in enumerate(ex.sides)
                  if side is not None for k, v in enumerate(side.views)])
        for i, part, v in slots:
            image[i], b, t = _view(part, v, prep, params[i])
            boxes.append(b)
            transforms.append(t)
        out = {"image": image, "label": ex.label, "uid": uid, "key": ex.key,
               "boxes": boxes, "transforms": transforms, "flipped": params[0].hflip}
        if ex.sides:  # per breast: label [2] (-1 = none) and uid ('' = missing side)
            out["label"] = [s.label if s is not None else -1 for s in ex.sides]
            out["sides"] = [s.uid if s is not None else "" for s in ex.sides]
        yield out


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Examples -> batch: ``image`` float32 ``[B, V, 1, rows, cols]`` in [0, 1] (grayscale; see
    :class:`Preprocess`), ``label`` int64 ``[B]`` (-1 = unlabelled, inference only),
    ``uid``/``key`` lists of str, ``boxes`` list (B) of lists (V) of float32 ``[N, 4]``,
    ``transforms`` list (B) of lists (V) of the shard JSON's original -> stored transform
    (:class:`mammoprep.geometry.Transform` as a dict; at least ``stored_size``),
    ``flipped`` bool ``[B]``. Four-view exams (:mod:`mammotrain.exams`): ``V`` = 4,
    ``label`` ``[B, 2]`` (left, right breast; -1 = unlabelled or missing), ``sides`` list
    (B) of the two breast uids ('' = missing side; its images are zeros), ``boxes`` and
    ``transforms`` of the present images only."""
    out = {"image": torch.stack([s["image"] for s in samples]),
           "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
           "uid": [s["uid"] for s in samples], "key": [s["key"] for s in samples],
           "boxes": [s["boxes"] for s in samples],
           "transforms": [s["transforms"] for s in samples],
           "flipped": torch.tensor([s["flipped"] for s in samples], dtype=torch.bool)}
    if "sides" in samples[0]:
        out["sides"] = [s["sides"] for s in samples]
    return out


def balanced_draw(uids: Sequence[str], labels: Sequence[int], rng: np.random.Generator
                  ) -> list[str]:
    """``len(uids)`` uids drawn with replacement, each with probability ``1 / (K * n_c)``
    (``n_c``: its class count, ``K``: classes present), so every class is equally likely."""
    counts = Counter(labels)
    p = np.array([1.0 / (len(counts) * counts[lab]) for lab in labels])
    idx = rng.choice(len(uids), size=len(uids), replace=True, p=p / p.sum())
    return [uids[i] for i in idx]


# ----------------------------------------------------------------------- distribution

def assign_shards(counts: Sequence[int], parts: int) -> list[list[int]]:
    """Split shards (``counts``: examples in each, in the given order) into ``parts`` lists
    of indices with near-equal example totals.

    Greedy: shards by decreasing count (ties in the given order, so a shuffled order gives a
    new split each epoch) each go to the part with the smallest total so far (ties: lowest
    part). Every index lands in exactly one part, given order kept within a part; with at
    least ``parts`` shards no part is empty and totals differ by at most ``max(counts)``."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    out: list[list[int]] = [[] for _ in range(parts)]
    heap = [(0, p) for p in range(parts)]  # (total, part): heapq pops the smallest
    for i in sorted(range(len(counts)), key=lambda i: -counts[i]):
        total, p = heapq.heappop(heap)
        out[p].append(i)
        heapq.heappush(heap, (total + int(counts[i]), p))
    return [sorted(o) for o in out]


def fit_length(uids: Sequence[str], n: int) -> list[str]:
    """``uids`` cut to ``n`` entries, or repeated from the head up to ``n``."""
    if not uids:
        return []
    return (list(uids) * math.ceil(n / len(uids)))[:n]


class _CountingReader:
    """A binary file that adds the bytes it returns to ``counter[name]``."""

    def __init__(self, path: Path, counter: Counter):
        self._fh, self._name, self._counter = open(path, "rb"), path.name, counter

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._counter[self._name] += len(data)
        return data

    def close(self) -> None:
        self._fh.close()


def _open_counted(src: Iterator[dict], counter: Counter, handler: Callable
                  ) -> Iterator[dict]:
    """``{'url'}`` -> ``{'url', 'stream'}`` (webdataset's url_opener for local tars, counting
    the bytes read per shard in ``counter``)."""
    for sample in src:
        try:
            stream = _CountingReader(Path(sample["url"]), counter)
        except OSError as exc:
            exc.args = exc.args + (sample["url"],)
            if handler(exc):
                continue
            break
        try:
            yield {**sample, "stream": stream}
        finally:
            stream.close()


#: how :class:`ShardStream` deals an epoch to ranks: 'shards' (each rank reads its own
#: shards; falls back to 'examples' with fewer shards than ranks) or 'examples' (examples
#: dealt one by one: every rank reads every shard holding one of its examples)
DISTRIBUTE = ("shards", "examples")


class ShardStream(torch.utils.data.IterableDataset):
    """Examples streamed from the shard tars with webdataset (one rank's share).

    Each ``__iter__`` is one epoch (:meth:`epoch_plan`): the epoch's examples (training:
    permuted with ``(seed, epoch)``, or drawn class-balanced) are grouped by shard; the shard
    list (training: shuffled per epoch) is split across ranks with near-equal example counts
    (:func:`assign_shards`), so each shard is read by one rank only; a training rank's
    examples are permuted and cut or repeated to ``ceil(N / world)`` (equal steps on every
    rank, no DDP wait at the epoch end), an evaluating rank keeps exactly its shards'
    examples (every example once over all ranks). Within a rank, its shards are split across
    DataLoader workers the same way; each worker reads its tars, keeps its examples, shuffles
    them in a seeded buffer of ``shuffle_buffer`` raw samples (training), then decodes and
    preprocesses. Yields dicts as taken by :func:`collate`; ``len()`` = this rank's examples
    per epoch.

    distribute: :data:`DISTRIBUTE`.
    handler: webdataset error handler for unreadable tar members (default: raise).
    augment: training augmentation (:class:`mammotrain.augment.Augment`; default: a
        horizontal flip with probability ``flip_p``); evaluation streams never augment.
    balanced: training only: the epoch list is drawn with replacement, every class equally
        likely (each example weighted by 1 / its class count; same length, seeded per epoch).
    bytes_read: bytes read from each tar (Counter: shard name -> bytes) by iterations in this
        process (DataLoader workers count in their own copies).
    """

    def __init__(self, root: str | Path, examples: Sequence[Example], prep: Preprocess, *,
                 train: bool, seed: int = 0, rank: int = 0, world: int = 1, flip_p: float = 0.5,
                 shuffle_buffer: int = 256, handler: Callable | None = None,
                 balanced: bool = False, distribute: str = "shards",
                 augment: Augment | None = None):
        super().__init__()
        if not examples:
            raise DataError(f"{root}: no examples to stream (empty split)")
        if distribute not in DISTRIBUTE:
            raise ValueError(f"distribute must be one of {', '.join(DISTRIBUTE)}, "
                             f"got {distribute!r}")
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, world={world}), got {rank}")
        self.root = Path(root)
        self.examples = {e.uid: e for e in examples}
        if len(self.examples) != len(examples):
            raise DataError(f"{root}: duplicate example uids")
        self.prep = prep
        self.train, self.seed, self.rank, self.world = train, seed, rank, world
        # training augmentation (default: the horizontal flip of flip_p); none in evaluation
        self.augment = (augment or Augment(hflip=flip_p)) if train else Augment()
        self.shuffle_buffer = int(shuffle_buffer)
        self.handler = handler
        self.balanced = bool(balanced and train)
        self.distribute = distribute
        self.epoch = 0
        self.bytes_read: Counter = Counter()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.train:
            return math.ceil(len(self.examples) / self.world)
        return len(self.epoch_uids())

    def _epoch_list(self) -> list[str]:
        """Every uid of the epoch, all ranks (training: permuted or class-balanced draw with
        ``(seed, epoch)``; evaluation: sorted)."""
        uids = sorted(self.examples)
        if not self.train:
            return uids
        rng = np.random.default_rng([self.seed, self.epoch, 11])
        if self.balanced:
            return balanced_draw(uids, [self.examples[u].label for u in uids], rng)
        return [uids[i] for i in rng.permutation(len(uids))]

    def epoch_plan(self) -> tuple[list[str], list[str]]:
        """(this rank's uids, the shards it reads, in reading order) for the current epoch.
        Training: ``len(self)`` uids on every rank (repeats where a rank is short)."""
        uids = self._epoch_list()
        by_shard: dict[str, list[str]] = defaultdict(list)
        for u in uids:
            by_shard[self.examples[u].shard].append(u)
        shards = sorted(by_shard)
        if self.train:
            order = np.random.default_rng([self.seed, self.epoch, 13]).permutation(len(shards))
            shards = [shards[i] for i in order]
        if self.world == 1 or (self.distribute == "shards" and len(shards) >= self.world):
            part = assign_shards([len(by_shard[s]) for s in shards], self.world)[self.rank]
            shards = [shards[i] for i in part]
            mine = [u for s in shards for u in by_shard[s]]
            if self.train:
                rng = np.random.default_rng([self.seed, self.epoch, self.rank, 17])
                mine = fit_length([mine[i] for i in rng.permutation(len(mine))], len(self))
        else:  # dealt one by one (every rank may read every shard)
            if self.train:
                uids = fit_length(uids, len(self) * self.world)
            mine = uids[self.rank::self.world]
        used = {s for u in mine for s in self.examples[u].shards}
        extra = sorted(used - set(shards))  # four-view: a breast in a shard of another rank
        return mine, [s for s in shards if s in used] + extra

    def epoch_uids(self) -> list[str]:
        """This rank's uids for the current epoch (:meth:`epoch_plan`)."""
        return self.epoch_plan()[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:
            torch.set_num_threads(1)
        uids, shards = self.epoch_plan()
        per_shard: Counter = Counter(self.examples[u].shard for u in uids)
        part = assign_shards([per_shard[s] for s in shards], nworkers)[wid]
        own = {shards[i] for i in part}
        # this worker's examples: those of its shards (by their first shard); it also reads
        # the other shards of its four-view exams (a breast across a shard boundary)
        wanted: dict[str, Counter] = defaultdict(Counter)
        parts: dict[str, tuple[str, ...]] = {}
        reads: set[str] = set()
        for uid in uids:
            ex = self.examples[uid]
            if ex.shard not in own:
                continue
            reads.update(ex.shards)
            keys = tuple(s.key for s in ex.sides if s is not None) if ex.sides else (ex.key,)
            for k in keys:
                wanted[k][uid] += 1
            if ex.sides:
                parts[uid] = keys
        mine = [s for s in shards if s in reads]
        if not mine:
            return iter(())
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, wid, int(self.train)])
        handler = self.handler or wds.reraise_exception
        stages: list = [wds.SimpleShardList([str(self.root / s) for s in mine]),
                        partial(_open_counted, counter=self.bytes_read, handler=handler),
                        partial(wds.tariterators.tar_file_expander, handler=handler),
                        partial(wds.tariterators.group_by_keys, handler=handler),
                        partial(_select, wanted=wanted, parts=parts)]
        if self.train and self.shuffle_buffer > 1:
            stages.append(partial(_shuffle, buffer=self.shuffle_buffer, rng=rng))
        stages.append(partial(_decode, examples=self.examples, prep=self.prep,
                              augment=self.augment, rng=rng))
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
