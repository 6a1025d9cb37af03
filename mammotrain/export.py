"""``mammotrain export``: a trained model as ONNX, or a ``best.pt`` as a self-contained
``.safetensors`` model file (:mod:`mammotrain.engine.checkpoint`).

ONNX graph (opset :data:`OPSET`, run by onnxruntime on CPU in the tests):

* input ``image``: float32 ``[B, V, 1, S, S]``, grayscale in [0, 1] exactly as
  :class:`mammotrain.preprocess.Preprocess` makes it (resize, ``/ (2**bits - 1)``); ``B`` is
  dynamic, ``V`` (views) and ``S`` (size) are fixed. The normalisation (timm mean/std,
  channel replication) is inside the graph.
* classification outputs ``logits`` float32 ``[B, K]`` (the model's, unscaled) and ``probs``
  ``[B, K]`` = ``softmax(logits / T)``, ``T`` the model's calibration temperature
  (:mod:`mammotrain.calibration`; 1 for models without one);
* detection outputs ``logits`` ``[B, 1]`` (malignancy), ``boxes`` ``[B, Q, 4]`` (normalised
  cx, cy, w, h of the model input) and ``objectness`` ``[B, Q]`` (logits).

The model document (task, preprocessing, data config, shard config; not the embedded
reference) is stored in the ONNX ``metadata_props`` under ``mammotrain``.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from . import jsonio
from .engine.checkpoint import read_checkpoint, write_model_file
from .engine.inference import inference_model
from .preprocess import input_hw
from .tasks import Task, get_task

OPSET = 17


class OnnxWrapper(torch.nn.Module):
    """The model with tensor outputs only (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, task: Task, temperature: float = 1.0):
        super().__init__()
        self.model, self.task, self.temperature = model, task, float(temperature)

    def forward(self, image: torch.Tensor):
        return self.task.onnx_forward(self.model(image), self.temperature)


def load_for_export(checkpoint: str | Path) -> tuple[Any, torch.nn.Module, dict[str, Any]]:
    """(resolved config, model in eval mode on CPU, checkpoint dict) of a ``.pt`` or a
    ``.safetensors`` model file."""
    ck = read_checkpoint(checkpoint)
    cfg, model = inference_model(ck, ck["config"]["shards"], "cpu")
    return cfg, model.eval(), ck


def export_onnx(checkpoint: str | Path, out: str | Path, *, opset: int = OPSET,
                check: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write ``out`` (ONNX) from a checkpoint or model file; with ``check`` and onnxruntime
    installed, run both on the same random batch of 2 and return the largest absolute
    difference per output (``max_abs_diff``)."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise ValueError("ONNX export needs the onnx package: pip install onnx onnxruntime "
                         "(both are in mammoprep's dev extra)") from None
    cfg, model, ck = load_for_export(checkpoint)
    task = get_task(cfg.task)
    wrapper = OnnxWrapper(model, task, ck.get("temperature", 1.0)).eval()
    views = task.export_views(cfg)
    rows, cols = input_hw(cfg.size)  # S x S, or rows x cols (--size 1024x512)
    x = torch.rand(2, views, 1, rows, cols, generator=torch.Generator().manual_seed(0))
    names = list(task.onnx_outputs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kw: dict[str, Any] = dict(input_names=["image"], output_names=names,
                              dynamic_axes={n: {0: "batch"} for n in ["image", *names]},
                              opset_version=opset)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kw["dynamo"] = False  # the TorchScript exporter: no onnxscript needed, one file
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks, legacy-exporter notice
        torch.onnx.export(wrapper, (x,), str(out), **kw)
    _add_metadata(out, ck)
    result: dict[str, Any] = {"path": str(out), "opset": opset, "outputs": names,
                              "input": [None, views, 1, rows, cols]}
    if check:
        result["max_abs_diff"] = compare_with_onnxruntime(wrapper, out, x, names)
        if result["max_abs_diff"]:
            log("onnxruntime vs PyTorch, max |difference|: " + ", ".join(
                f"{k} {v:.2e}" for k, v in result["max_abs_diff"].items()))
    return result


def _add_metadata(path: Path, ck: dict[str, Any]) -> None:
    """Store the model document (without the embedded reference) in ``metadata_props``."""
    import onnx

    doc = dict(ck.get("document") or {"config": ck.get("config"), "epoch": ck.get("epoch")})
    if isinstance(doc.get("reference"), dict):
        doc["reference"] = {k: v for k, v in doc["reference"].items() if k != "npz_zlib_b64"}
    m = onnx.load(str(path))
    entry = m.metadata_props.add()
    entry.key, entry.value = "mammotrain", jsonio.dumps(doc, sort_keys=True)
    onnx.save(m, str(path))


def compare_with_onnxruntime(wrapper: torch.nn.Module, path: Path, x: torch.Tensor,
                             names: list[str]) -> dict[str, float]:
    """Largest absolute difference per output between PyTorch and onnxruntime (CPU) on
    ``x``; {} when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(names, {"image": x.numpy()})
    with torch.no_grad():
        ref = wrapper(x)
    return {n: float((torch.as_tensor(g) - r).abs().max()) for n, g, r in zip(names, got, ref)}


def export_model_file(checkpoint: str | Path, out: str | Path) -> Path:
    """A ``best.pt`` (whose run and shards are still on this machine) as a self-contained
    ``.safetensors`` model file with its ``.json``."""
    cfg, model, ck = load_for_export(checkpoint)
    return write_model_file(out, model, cfg, ck)
