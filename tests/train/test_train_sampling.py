"""Class-balanced sampling (``--balanced``): the training epoch list draws every class
equally often on average, stays seeded and equal in length on every rank."""

from __future__ import annotations

from collections import Counter

from mammotrain.data import Example
from mammotrain.preprocess import Preprocess
from mammotrain.stream import ShardStream


def _examples(n0: int, n1: int) -> list[Example]:
    return [Example(f"k{i:03d}", f"k{i:03d}", ("cc",), int(i >= n0), f"p{i}", 0, "shard-000000.tar")
            for i in range(n0 + n1)]


def _labels(stream: ShardStream, epoch: int) -> Counter:
    stream.set_epoch(epoch)
    return Counter(stream.examples[u].label for u in stream.epoch_uids())


def test_balanced_epoch_draws_classes_equally(tmp_path):
    ex = _examples(180, 20)
    plain = ShardStream(tmp_path, ex, Preprocess(32), train=True, seed=1)
    assert _labels(plain, 0) == Counter({0: 180, 1: 20})  # a permutation: every example once
    bal = ShardStream(tmp_path, ex, Preprocess(32), train=True, seed=1, balanced=True)
    ones = [_labels(bal, e)[1] for e in range(5)]
    assert all(sum(_labels(bal, e).values()) == 200 for e in range(5))  # same epoch length
    assert all(70 <= n <= 130 for n in ones), ones  # ~100 of 200 (sd 7), not 20
    assert len(set(ones)) > 1  # a new draw each epoch ...
    bal.set_epoch(3)
    again = ShardStream(tmp_path, ex, Preprocess(32), train=True, seed=1, balanced=True)
    again.set_epoch(3)
    assert bal.epoch_uids() == again.epoch_uids()  # ... seeded by (seed, epoch)


def test_balanced_is_training_only_and_splits_evenly_over_ranks(tmp_path):
    ex = _examples(30, 3)
    ev = ShardStream(tmp_path, ex, Preprocess(32), train=False, balanced=True)
    assert _labels(ev, 0) == Counter({0: 30, 1: 3})  # evaluation sees every example once
    ranks = [ShardStream(tmp_path, ex, Preprocess(32), train=True, seed=0, rank=r, world=2,
                         balanced=True) for r in range(2)]
    lists = [s.epoch_uids() for s in ranks]
    assert len(lists[0]) == len(lists[1]) == 17
