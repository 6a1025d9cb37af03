"""DDP on CPU: `torchrun --nproc_per_node 2` (gloo) trains one epoch; both ranks log the same
number of optimiser steps (the shards hold uneven numbers of examples per rank and worker) and
read disjoint shards. Shard-aware distribution (:meth:`ShardStream.epoch_plan`): shards are
split across ranks (disjoint, covering), equal steps per rank, each rank reads ~1/W of the tar
bytes; distributed validation gathers every example exactly once (two gloo processes)."""

from __future__ import annotations

import json
import math
import os
import pickle
import socket
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from mammotrain.data import plan_examples, read_manifest, split_examples
from mammotrain.preprocess import Preprocess
from mammotrain.stream import EpochLoader, ShardStream, assign_shards, fit_length
from mammotrain.tasks import get_task

from ..conftest import build


@pytest.fixture(scope="session")
def small_shards(tmp_path_factory, train_shards) -> "Path":  # noqa: F811, F821
    """The ``train_shards`` cohort at 2 breasts per shard (24 shards): enough for 4 ranks."""
    return build(tmp_path_factory.getbasetemp(), "train-shards-2ps", 24, 0, 128, per_shard=2)


def _density(shards):
    ex, _ = plan_examples(read_manifest(shards), get_task("density"), 1)
    return ex


def test_assign_shards_balances_greedily():
    # by count: 5 -> part 0; 3 -> part 1; 3 -> part 1 (3 < 5); 2 -> part 0 (5 < 6);
    # 1 -> part 1 (6 < 7): totals 7 and 7
    assert assign_shards([5, 3, 3, 2, 1], 2) == [[0, 3], [1, 2, 4]]
    assert assign_shards([2, 2, 2], 3) == [[0], [1], [2]]
    assert assign_shards([4, 1], 3) == [[0], [1], []]  # more parts than shards: one empty
    assert fit_length(["a", "b", "c"], 2) == ["a", "b"]
    assert fit_length(["a", "b"], 5) == ["a", "b", "a", "b", "a"]
    with pytest.raises(ValueError, match="parts"):
        assign_shards([1], 0)


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_read_disjoint_covering_shards_with_equal_steps(small_shards, world):
    ex = _density(small_shards)
    shard_of = {e.uid: e.shard for e in ex}
    all_shards = {e.shard for e in ex}
    plans = {}
    for epoch in (0, 1):
        streams = [ShardStream(small_shards, ex, Preprocess(16), train=True, seed=3,
                               rank=r, world=world) for r in range(world)]
        for s in streams:
            s.set_epoch(epoch)
        plans[epoch] = [s.epoch_plan() for s in streams]
        shard_sets = [set(sh) for _, sh in plans[epoch]]
        assert sum(len(x) for x in shard_sets) == len(all_shards)  # disjoint ...
        assert set().union(*shard_sets) == all_shards                # ... and covering
        for (uids, shards) in plans[epoch]:
            assert len(uids) == math.ceil(len(ex) / world)           # equal share
            assert {shard_of[u] for u in uids} == set(shards)        # only its own shards
        steps = {EpochLoader(s, 3).steps for s in streams}
        assert steps == {math.ceil(len(ex) / world) // 3}
    # a new shard split each epoch (the shard list is shuffled with (seed, epoch))
    assert [set(sh) for _, sh in plans[0]] != [set(sh) for _, sh in plans[1]]


def test_evaluation_ranks_partition_the_examples(small_shards):
    ex = _density(small_shards)
    for world in (2, 4):
        parts = [ShardStream(small_shards, ex, Preprocess(16), train=False, rank=r,
                             world=world).epoch_uids() for r in range(world)]
        everything = [u for p in parts for u in p]
        assert sorted(everything) == sorted(e.uid for e in ex)  # each example exactly once
        assert all(parts)


def _read_bytes(shards, ex, world, distribute="shards"):
    """Bytes read from the tars by each rank's stream over one training epoch (ranks
    simulated in this process, no workers) and the examples each rank yielded."""
    read, yielded = [], []
    for r in range(world):
        s = ShardStream(shards, ex, Preprocess(16), train=True, seed=1, rank=r, world=world,
                        distribute=distribute)
        yielded.append(sum(1 for _ in s))
        read.append(s.bytes_read)
    return read, yielded


def test_read_bytes_per_rank_are_about_one_over_world(small_shards, train_shards):  # noqa: F811
    ex = _density(small_shards)
    size = {e.shard: (small_shards / e.shard).stat().st_size for e in ex}
    total = sum(size.values())
    for world in (1, 2, 4):
        read, yielded = _read_bytes(small_shards, ex, world)
        assert yielded == [math.ceil(len(ex) / world)] * world
        names = [n for c in read for n in c]
        assert len(names) == len(set(names)) == len(size)  # every shard read by one rank
        for c in read:
            for name, n in c.items():
                # the whole tar once, up to the end-of-archive marker (tar files end in
                # zero padding to a multiple of 10240 bytes that the reader may skip)
                assert size[name] - 10240 <= n <= size[name]
            assert sum(c.values()) <= total / world + max(size.values())
    # the old dealing of examples one by one: with 16 images per shard every rank reads
    # (nearly) every shard, i.e. ~4x the data set for 4 ranks
    ex = _density(train_shards)
    total = sum((train_shards / s).stat().st_size for s in {e.shard for e in ex})
    read, _ = _read_bytes(train_shards, ex, 4, distribute="examples")
    assert sum(sum(c.values()) for c in read) > 3.0 * total
    read, _ = _read_bytes(train_shards, ex, 4)
    assert sum(sum(c.values()) for c in read) <= total


def test_shuffle_buffer_is_seeded(train_shards):
    ex = _density(train_shards)

    def order(seed, buffer):
        s = ShardStream(train_shards, ex, Preprocess(16), train=True, seed=seed,
                        shuffle_buffer=buffer, flip_p=0.0)
        return [x["uid"] for x in s]

    a = order(2, 256)
    assert a == order(2, 256) and sorted(a) == sorted(e.uid for e in ex)
    assert a != order(2, 0)  # the buffer reorders what shard order gives
    assert a != order(4, 256)


def _validate_rank(rank: int, world: int, port: int, cfg_dict: dict, uids: list, state: str,
                   out: str):
    """One gloo rank joined as under torchrun (:func:`init_distributed`, 0.5 min timeout):
    predict its share of ``uids``, gather to rank 0; each rank pickles what it has."""
    from mammotrain.config import TrainConfig
    from mammotrain.engine.distributed import gather_predictions, init_distributed
    from mammotrain.engine.evaluate import eval_loader, predict
    from mammotrain.tasks import build_task_model

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    dist = init_distributed("cpu", timeout_min=0.5)
    timeout = torch.distributed.group.WORLD._get_backend(torch.device("cpu")).options._timeout
    cfg = TrainConfig.from_dict(cfg_dict)
    ex = [e for e in _density(cfg.shards) if e.uid in set(uids)]
    model, _ = build_task_model(cfg)
    model.load_state_dict(torch.load(state))
    local = predict(model, eval_loader(cfg, ex, dist), cfg, torch.device("cpu"))
    merged = gather_predictions(local, dist)
    with open(f"{out}.rank{rank}", "wb") as fh:
        pickle.dump({"local": local["uid"], "merged": merged, "rank": dist.rank,
                     "timeout_s": timeout.total_seconds()}, fh)
    torch.distributed.destroy_process_group()


def test_distributed_validation_gathers_each_example_once(small_shards, tmp_path):
    from mammotrain.config import TrainConfig
    from mammotrain.engine.evaluate import eval_loader, predict
    from mammotrain.tasks import build_task_model

    cfg = TrainConfig(task="density", views=1, backbone="test_resnet", size=32,
                      shards=str(small_shards), workers=0, device="cpu", batch_size=4,
                      gradcam=0).resolved()
    ex = _density(small_shards)
    val = split_examples(ex, 0, 0.2, 0).val
    torch.manual_seed(0)
    model, _ = build_task_model(cfg)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    single = predict(model, eval_loader(cfg, val), cfg, torch.device("cpu"))
    out = str(tmp_path / "val")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.spawn(_validate_rank, nprocs=2, args=(
        2, port, cfg.to_dict(), [e.uid for e in val], str(tmp_path / "model.pt"), out))
    ranks = [pickle.loads(open(f"{out}.rank{r}", "rb").read()) for r in range(2)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert [r["timeout_s"] for r in ranks] == [30.0, 30.0]  # --dist-timeout 0.5 (minutes)
    assert ranks[1]["merged"] is None  # gathered to rank 0 only
    local = [set(r["local"]) for r in ranks]
    assert local[0] and local[1] and not local[0] & local[1]  # each rank its own share
    merged = ranks[0]["merged"]
    assert Counter(merged["uid"]) == Counter(single["uid"])  # every example exactly once
    assert len(merged["uid"]) == len(val) == len(set(merged["uid"]))
    pos = {u: i for i, u in enumerate(single["uid"])}
    idx = [pos[u] for u in merged["uid"]]
    np.testing.assert_array_equal(merged["label"], single["label"][idx])
    np.testing.assert_allclose(merged["probs"], single["probs"][idx], atol=1e-5)
    assert merged["loss"] == pytest.approx(single["loss"], rel=1e-5)


def test_torchrun_two_ranks_equal_steps(train_shards, tmp_path):
    out = tmp_path / "ddp"
    ex, _ = plan_examples(read_manifest(train_shards), get_task("density"), 1)
    n_train = len(split_examples(ex, 0, 0.2, 0).train)
    batch = 3
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mammotrain.cli", "train", "--fold", "0", "--task", "density", "--views", "1",
           "--backbone", "test_resnet", "--size", "32", "--epochs", "1", "--batch-size",
           str(batch), "--workers", "1", "--device", "cpu", "--gradcam", "0",
           "--shards", str(train_shards), "--out", str(out), "--val-fraction", "0.2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, f"torchrun failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    logs = {}
    for rank in (0, 1):
        lines = (out / "fold0" / f"train_log.rank{rank}.jsonl").read_text().splitlines()
        logs[rank] = [json.loads(ln) for ln in lines]
    assert len(logs[0]) == len(logs[1]) == 1
    a, b = logs[0][0], logs[1][0]
    assert a["world"] == b["world"] == 2
    per_rank = (n_train + 1) // 2
    assert a["steps"] == b["steps"] == a["expected_steps"] == per_rank // batch
    assert a["examples"] == b["examples"] == a["steps"] * batch
    # each training shard read by one rank: shard counts and bytes add up to the split's
    train_shards_ = {e.shard for e in split_examples(ex, 0, 0.2, 0).train}
    assert min(a["shards"], b["shards"]) >= 1
    assert a["shards"] + b["shards"] == len(train_shards_)
    assert a["shard_bytes"] + b["shard_bytes"] == sum(
        (train_shards / s).stat().st_size for s in train_shards_)
    assert (out / "fold0" / "metrics.json").exists()  # rank 0 evaluated the test fold


def test_torchrun_detection_with_early_stopping(train_shards, tmp_path):
    """The detector under DDP; rank 0's early-stopping decision reaches rank 1 (both ranks
    train the same epochs, nobody waits in a collective the other left)."""
    out = tmp_path / "ddp-det"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mammotrain.cli", "train", "--fold", "1", "--task", "detection",
           "--backbone", "test_resnet", "--size", "32", "--epochs", "4", "--patience", "1",
           "--select", "loss", "--batch-size", "4", "--workers", "0", "--device", "cpu",
           "--gradcam", "0", "--max-steps-per-epoch", "2", "--dec-layers", "1",
           "--shards", str(train_shards), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, f"torchrun failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    epochs = {rank: len((out / "fold1" / f"train_log.rank{rank}.jsonl").read_text().splitlines())
              for rank in (0, 1)}
    assert epochs[0] == epochs[1] >= 2
    history = [json.loads(ln) for ln in (out / "fold1" / "history.jsonl").read_text().splitlines()]
    assert len(history) == epochs[0]
    # the run must stop at the first epoch whose validation loss is not below every earlier
    # one (patience 1, --select loss), and train all 4 epochs only if each one improved
    losses = [h["val_loss"] for h in history]
    first_flat = next((i + 1 for i in range(1, len(losses)) if losses[i] >= min(losses[:i])),
                      None)
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    assert [h["epoch"] for h in history if h["early_stop"]] == ([first_flat] if first_flat
                                                                 else [])
    assert len(history) == (first_flat or 4)
    assert {"map25", "recall25"} <= set(json.loads((out / "fold1" / "metrics.json").read_text()))
