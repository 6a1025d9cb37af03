"""Every checkpoint and model-file format, read and written.

* ``foldK/checkpoint.pt`` (:func:`save_training_state` / :func:`load_training_state`): the
  last epoch: model, optimiser, scheduler, scaler, EMA, RNG states, history, selection;
* ``foldK/best.pt`` (:func:`save_best_weights`): the weights of the selected epoch with the
  config, epoch (counted from 1: ``epoch_base`` 1), selection, test fold, seen patients
  and, once the fold is evaluated, ``temperature`` (below);
* ``foldK/best.safetensors`` + ``best.json``: the self-contained model file (below);
* :func:`read_checkpoint` reads any of them for inference.

Self-contained model files: ``best.safetensors`` + ``best.json``.

A trained fold's selected weights are written as ``OUT/foldK/best.safetensors`` (tensors
only, no pickle) whose header metadata (``__metadata__["mammotrain"]``) holds one JSON
document, also written next to it as ``best.json`` for people to read:

* ``format`` / ``format_version``: ``"mammotrain.model"`` / 1;
* ``config``: the resolved :class:`~mammotrain.config.TrainConfig` (backbone, task, views,
  size, resize, intensity, in_chans, head shape, ...);
* ``task``: name, kind, classes and activation of the task spec;
* ``preprocess``: the loader's :class:`~mammotrain.preprocess.Preprocess` (size, resize, intensity)
  and ``data_config``: the backbone's timm data config (mean, std, interpolation);
* ``shards_config``: the ``config`` of the training shards' ``config.json`` (mammoprep's
  preparation: crop, size, energy rules, VOI, reference path on the training machine, ...);
* ``reference``: the harmonisation reference the shards were made with, embedded
  (``npz_zlib_b64``: the ``.npz`` of :meth:`mammoprep.harmonise.match.Reference.save`, zlib
  compressed, base64) with ``sha256``, the content hash of its histogram (little-endian
  int64 counts followed by the bit depth as 8 bytes), verified on load; null without
  harmonisation;
* ``epoch``, ``selection``, ``test_fold``, ``seen_patients`` (pseudonyms), ``versions``;
* ``temperature``: the calibration temperature ``T`` fitted on the fold's validation
  patients (:mod:`mammotrain.calibration`); ``predict`` gives ``softmax(logits / T)``.
  Files and ``best.pt`` written before calibration existed have none and are read with
  ``T = 1`` (the model's own probabilities).

:func:`read_model_file` returns the same dict as :func:`read_checkpoint`
for a ``.pt``, so ``mammotrain predict -c MODEL.safetensors`` needs nothing else: the
embedded shard config and reference are materialised in a private temporary folder that
stands in for the training shards (``config["shards"]``).
"""

from __future__ import annotations

import atexit
import base64
import functools
import hashlib
import json
import os
import platform
import shutil
import tempfile
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import webdataset
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

import mammoprep
from mammoprep.atomic import atomic_write, fsync_dir
from mammoprep.harmonise.match import Reference
from mammoprep.harmonise.reference import load_reference

from .. import __version__, jsonio
from ..config import TrainConfig
from ..tasks import get_task

FORMAT = "mammotrain.model"
FORMAT_VERSION = 1
METADATA_KEY = "mammotrain"


def reference_hash(hist, bits: int) -> str:
    """Content hash of a reference: sha256 of its counts (``<i8``) then its bit depth."""
    h = hashlib.sha256(np.ascontiguousarray(hist, dtype="<i8").tobytes())
    h.update(int(bits).to_bytes(8, "little"))
    return h.hexdigest()


@functools.lru_cache(maxsize=4)  # once per run, not per fold (a DICOM folder is re-pooled)
def embed_reference(spec: str | Path) -> dict[str, Any]:
    """A reference (``.npz``, DICOM folder or file, as ``--ref`` takes it) as an embeddable
    dict: ``sha256`` (:func:`reference_hash`), ``bits``, ``count``, ``source`` (the path it
    came from) and ``npz_zlib_b64``."""
    ref = load_reference(spec)
    with tempfile.TemporaryDirectory(prefix="mammotrain-ref-") as tmp:
        raw = ref.save(Path(tmp) / "ref.npz").read_bytes()
    return {"sha256": reference_hash(ref.hist, ref.bits), "bits": int(ref.bits),
            "count": int(ref.count), "source": str(spec),
            "npz_zlib_b64": base64.b64encode(zlib.compress(raw, 9)).decode("ascii")}


def extract_reference(entry: dict[str, Any], path: Path, where: str = "model file") -> Path:
    """Write an embedded reference to ``path`` (.npz) after checking its content hash;
    raises ValueError naming ``where`` when the copy does not match its hash."""
    try:
        raw = zlib.decompress(base64.b64decode(entry["npz_zlib_b64"]))
    except (KeyError, ValueError, zlib.error) as exc:
        raise ValueError(f"{where}: embedded reference unreadable ({exc})") from None
    path.write_bytes(raw)
    ref = Reference.load(path)
    got = reference_hash(ref.hist, ref.bits)
    if got != entry.get("sha256"):
        raise ValueError(f"{where}: embedded reference does not match its content hash "
                         f"(reference.sha256 {entry.get('sha256')}, computed {got}); the file "
                         "is damaged or was edited")
    return path


def versions() -> dict[str, str]:
    """The package versions a run or model file was made with."""
    return {"mammotrain": __version__, "mammoprep": mammoprep.__version__,
            "torch": torch.__version__, "timm": timm.__version__,
            "webdataset": getattr(webdataset, "__version__", "?"),
            "python": platform.python_version()}


def model_document(cfg, model: torch.nn.Module, ck: dict[str, Any]) -> dict[str, Any]:
    """The JSON document of a model file (see the module docstring). ``cfg``: the resolved
    TrainConfig; ``ck``: the best-checkpoint dict (epoch, selection, test_fold, ...)."""
    task = get_task(cfg.task)
    shards_config: dict[str, Any] = {}
    src = Path(cfg.shards) / "config.json"
    if src.exists():
        shards_config = json.loads(src.read_text()).get("config") or {}
    ref_spec = (shards_config.get("prep") or {}).get("reference")
    reference = embed_reference(ref_spec) if ref_spec else None
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "task": {"name": task.name, "kind": task.kind, "classes": list(task.classes),
                 "activation": task.activation},
        "preprocess": asdict(cfg.preprocess()),
        "data_config": getattr(model, "data_config", None),
        "shards_config": shards_config,
        "reference": reference,
        "epoch": ck.get("epoch"), "epoch_base": ck.get("epoch_base", 0),
        "selection": ck.get("selection"), "test_fold": ck.get("test_fold"),
        "seen_patients": list(ck.get("seen_patients") or []),
        "temperature": float(ck.get("temperature", 1.0)),
        "versions": versions(),
    }


def write_model_file(path: str | Path, model: torch.nn.Module, cfg, ck: dict[str, Any]
                     ) -> Path:
    """Write ``path`` (``.safetensors``: the model's state dict plus the document of
    :func:`model_document` in its metadata) and the same document as ``path``'s ``.json``."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: a model file ends in .safetensors")
    doc = model_document(cfg, model, ck)
    text = jsonio.dumps(doc, sort_keys=True)  # strict JSON, like every mammotrain file
    # clone: tied or shared storages are written as separate tensors
    tensors = {k: v.detach().to("cpu").clone().contiguous()
               for k, v in model.state_dict().items()}
    atomic_write(path, save_safetensors(tensors, metadata={METADATA_KEY: text}))
    jsonio.write_json(path.with_suffix(".json"), doc)
    return path


def read_document(path: str | Path) -> dict[str, Any]:
    """The JSON document in a model file's header (no tensors read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{path}: not a safetensors file ({exc})") from None
    if METADATA_KEY not in meta:
        raise ValueError(f"{path}: a safetensors file without a mammotrain model document "
                         f"(metadata keys: {sorted(meta)}); write one with "
                         "`mammotrain export -c best.pt -o model.safetensors`")
    doc = json.loads(meta[METADATA_KEY])
    if doc.get("format") != FORMAT or int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path}: model document format {doc.get('format')!r} version "
                         f"{doc.get('format_version')!r}; this mammotrain reads {FORMAT!r} "
                         f"up to version {FORMAT_VERSION}")
    return doc


_MATERIALISED: list[str] = []


def _cleanup() -> None:
    for d in _MATERIALISED:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup)


def materialise(doc: dict[str, Any], where: str) -> Path:
    """A private temporary folder standing in for the training shards: ``config.json``
    with the embedded shard config, its reference (if any) extracted next to it and the
    config's reference path pointing there. Removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="mammotrain-model-"))
    _MATERIALISED.append(str(folder))
    shards_config = json.loads(json.dumps(doc.get("shards_config") or {}))
    prep = shards_config.setdefault("prep", {}) if shards_config else {}
    if doc.get("reference"):
        prep["reference"] = str(extract_reference(doc["reference"], folder / "reference.npz",
                                                  where))
    elif prep:
        prep["reference"] = None
    if shards_config:
        (folder / "config.json").write_text(json.dumps({"config": shards_config}, indent=2))
    return folder


def read_model_file(path: str | Path) -> dict[str, Any]:
    """A model file as :func:`read_checkpoint` gives a ``.pt``: ``model``
    (state dict), ``config`` (its ``shards`` replaced by the materialised stand-in folder),
    ``epoch`` counted from 1, ``selection``, ``test_fold``, ``seen_patients``,
    ``temperature`` (1 for files without one), plus ``document`` (the whole JSON
    document)."""
    path = Path(path)
    doc = read_document(path)
    state = load_file(str(path))
    config = dict(doc["config"])
    config["shards"] = str(materialise(doc, str(path)))
    epoch = doc.get("epoch")
    epoch = -1 if epoch is None else int(epoch) + 1 - int(doc.get("epoch_base", 0))
    return {"model": state, "config": config, "epoch": epoch, "epoch_base": 1,
            "selection": doc.get("selection"), "test_fold": doc.get("test_fold"),
            "seen_patients": doc.get("seen_patients") or [],
            "temperature": temperature_of(doc, str(path)), "document": doc}


def save_best(out: Path, model: torch.nn.Module, cfg, best: dict[str, Any], log) -> None:
    """``out/best.safetensors`` (+ ``best.json``) from the selected weights loaded in
    ``model``; a failure is logged, never loses the fold's results."""
    try:
        write_model_file(out / "best.safetensors", model, cfg, best)
    except Exception as exc:  # noqa: BLE001 - the fold's metrics must still be written
        log(f"warning: {out / 'best.safetensors'} not written ({type(exc).__name__}: {exc})")


# ----------------------------------------------------------------- training checkpoints

def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary name, fsynced, then renamed (the
    temporary name ``path.tmp`` is kept: ``torch.save`` names the zip archive after it)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def save_best_weights(path: Path, model: torch.nn.Module, cfg, epoch: int, selection: str,
                      test_fold: int, seen_patients: list[str]) -> None:
    """``best.pt``: the selected weights, ``epoch`` (0-based, stored counted from 1)."""
    atomic_save({"model": model.state_dict(), "epoch": epoch + 1, "epoch_base": 1,
                 "config": cfg.to_dict(), "selection": selection,
                 "test_fold": test_fold, "seen_patients": seen_patients}, path)


def save_training_state(path: Path, state, cfg, epoch: int, *, selection: str,
                        test_fold: int, seen_patients: list[str]) -> None:
    """``checkpoint.pt`` of a :class:`~mammotrain.engine.fit.FitState` after 0-based
    ``epoch``."""
    atomic_save({"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
                 "scheduler": state.scheduler.state_dict(), "scaler": state.scaler.state_dict(),
                 "ema": state.ema.state_dict() if state.ema is not None else None,
                 "epoch": epoch + 1, "best_epoch": state.best_epoch + 1, "epoch_base": 1,
                 "best_score": list(state.best_score), "history": state.history,
                 "stopped": state.stopped, "selection": selection,
                 "test_fold": test_fold, "seen_patients": seen_patients,
                 "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
                 "config": cfg.to_dict()}, path)


def load_training_state(path: Path, state) -> dict[str, Any]:
    """Restore a :class:`~mammotrain.engine.fit.FitState` (model, optimiser, scheduler,
    scaler, RNG, epoch counters, history) from ``checkpoint.pt``; returns the checkpoint."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    state.model.load_state_dict(ck["model"])
    state.optimizer.load_state_dict(ck["optimizer"])
    state.scheduler.load_state_dict(ck["scheduler"])
    state.scaler.load_state_dict(ck["scaler"])
    torch.set_rng_state(ck["rng"]["torch"])
    np.random.set_state(ck["rng"]["numpy"])
    # checkpoints count epochs from 1 (older ones from 0: epoch_base absent)
    base = int(ck.get("epoch_base", 0))
    state.start, state.best_epoch = ck["epoch"] + 1 - base, ck["best_epoch"] - base
    state.history = ck["history"]
    state.best_score = tuple(ck["best_score"])
    state.stopped = bool(ck.get("stopped", False))
    return ck


def load_best(out: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load ``out/best.pt``'s weights into ``model``; returns the checkpoint dict."""
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(best["model"])
    return best


# ---------------------------------------------------------------------------- reading

def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A ``best.pt`` / ``checkpoint.pt`` as a dict with its ``config`` (from the file or,
    for older files, from the run's ``config.json`` two folders up) and ``epoch`` counted
    from 1; ``seen_patients`` (the patient pseudonyms of its training and validation
    splits) and ``test_fold`` where the run recorded them; ``temperature`` (1 where the
    file has none)."""
    path = Path(path)
    if path.suffix == ".safetensors":  # a self-contained model file
        return read_model_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or "model" not in ck:
        raise ValueError(f"{path}: not a mammotrain checkpoint (no 'model' entry)")
    if ck.get("config") is None:
        run_cfg = path.resolve().parent.parent / "config.json"
        if not run_cfg.exists():
            raise ValueError(f"{path}: the checkpoint holds no config and {run_cfg} is missing")
        ck["config"] = json.loads(run_cfg.read_text())["config"]
    ck["epoch"] = int(ck.get("epoch", -1)) + 1 - int(ck.get("epoch_base", 0))
    ck["epoch_base"] = 1
    ck["temperature"] = temperature_of(ck, str(path))
    return ck


def temperature_of(doc: dict[str, Any], where: str) -> float:
    """The calibration temperature of a checkpoint or model document: 1.0 when it has
    none (written before calibration); ValueError naming ``where`` when it is not > 0."""
    t = doc.get("temperature")
    if t is None:
        return 1.0
    try:
        t = float(t)
    except (TypeError, ValueError):
        t = float("nan")
    if not (t > 0 and t < float("inf")):
        raise ValueError(f"{where}: temperature {doc.get('temperature')!r} is not a positive "
                         "number; the file is damaged or was edited (delete the entry to use "
                         "the model's own probabilities, T = 1)")
    return t


def load_checkpoint(path: str | Path) -> tuple[TrainConfig, dict[str, torch.Tensor], int]:
    """(config, model state dict, epoch counted from 1) of a checkpoint
    (:func:`read_checkpoint`)."""
    ck = read_checkpoint(path)
    return TrainConfig.from_dict(ck["config"]), ck["model"], ck["epoch"]
