"""``mammotrain cv|train|ablation --config FILE``: TOML / YAML option files, the command
line overriding them, unknown keys refused, the resolved configuration saved; and the
curves of the run (``history.csv``, TensorBoard events) read back with their readers."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from mammotrain.cli import main



def test_toml_config_file_drives_training_and_cli_wins(train_shards, tmp_path):  # noqa: F811
    cfg = tmp_path / "run.toml"
    out = tmp_path / "run"
    cfg.write_text(f'''task = "density"
views = 1
backbone = "test_resnet"
size = 32
epochs = 2
batch-size = 4
workers = 0
max_steps_per_epoch = 1
device = "cpu"
gradcam = 0
wd = 0.001
balanced = true
folds = [3]
shards = "{train_shards}"
out = "{out}"
''')
    r = CliRunner().invoke(main, ["train", "--config", str(cfg), "--fold", "3",
                                  "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["task"] == "density" and saved["views"] == 1 and saved["size"] == 32
    assert saved["weight_decay"] == 0.001  # from the file, by its flag name --wd
    assert saved["balanced"] is True
    assert saved["batch_size"] == 2  # the command line wins over the file
    # curves: history.jsonl as CSV, and TensorBoard scalars per epoch
    import csv

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fold = out / "fold3"
    hist = [json.loads(x) for x in (fold / "history.jsonl").read_text().splitlines()]
    rows = list(csv.DictReader(open(fold / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [h["epoch"] for h in hist] == [1, 2]
    assert [float(r["train_loss"]) for r in rows] == [h["train_loss"] for h in hist]
    acc = EventAccumulator(str(fold / "tensorboard"))
    acc.Reload()
    assert {"train/loss", "train/lr", "val/loss"} <= set(acc.Tags()["scalars"])
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == [1, 2]
    assert [e.value for e in events] == [float(np.float32(h["train_loss"])) for h in hist]


def test_yaml_config_file_and_unknown_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: density\nlearning_rate: 0.1\n")
    r = CliRunner().invoke(main, ["cv", "--config", str(bad)])
    assert r.exit_code == 2
    assert "unknown option(s) learning_rate" in r.output and "lr" in r.output
    broken = tmp_path / "broken.toml"
    broken.write_text("task = \n")
    r = CliRunner().invoke(main, ["cv", "--config", str(broken)])
    assert r.exit_code == 2 and "not valid TOML/YAML" in r.output
    ok = tmp_path / "ok.yml"
    ok.write_text("task: cancer\n")  # values still go through the option types
    r = CliRunner().invoke(main, ["cv", "--config", str(ok), "--shards", str(tmp_path),
                                  "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "unknown task 'cancer'" in r.output


def test_options_are_declared_once_in_groups():
    """Every TrainConfig field is the task or a field of exactly one option group; the
    training commands' options are built from those declarations (same names, defaults)."""
    import dataclasses

    from mammotrain.cli import cv_cmd
    from mammotrain.config import TrainConfig
    from mammotrain.options import CLI_ORDER, CONFIG_ORDER, GROUPS

    grouped = [f.name for cls in GROUPS.values() for f in dataclasses.fields(cls)]
    assert len(grouped) == len(set(grouped))
    assert sorted(grouped + ["task"]) == sorted(f.name for f in dataclasses.fields(TrainConfig))
    assert list(TrainConfig().to_dict()) == list(CONFIG_ORDER)
    cfg = TrainConfig(batch_size=7, backbone="test_resnet")
    assert cfg.group("optimisation").batch_size == 7
    assert cfg.group("model").backbone == "test_resnet"
    params = {p.name: p for p in cv_cmd.params}
    assert [n for n in params if n in CLI_ORDER] == list(CLI_ORDER)
    defaults = TrainConfig()
    for name in ("batch_size", "weight_decay", "step_size", "gamma", "val_fraction", "workers",
                 "seed", "shuffle_buffer", "dist_timeout", "gradcam", "queries", "select"):
        assert params[name].default == getattr(defaults, name), name
