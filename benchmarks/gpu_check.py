"""The Python parts of ``benchmarks/gpu_check.sh`` (one GPU check in one go; issue 24, item 5).

Each subcommand handles one step of the check: it measures or reads the step's figures,
prints the one line ``gpu_check: <step>: <figures>`` (or ``... skipped (<why>)``, or
``... FAILED (<why>)``), records the step as ``<results>/<step>.json`` and exits 0 unless the
step could run and failed (exit 1). ``report`` gathers the records into ``gpu_check.json``
and ``gpu_check.md``.

    python benchmarks/gpu_check.py --results DIR train LOG
    python benchmarks/gpu_check.py --results DIR ddp RUN_DIR --wall S --device D
    python benchmarks/gpu_check.py --results DIR decode [--repeats N] PATH...
    python benchmarks/gpu_check.py --results DIR export MODEL_FILE ONNX [--batch B --runs N]
    python benchmarks/gpu_check.py --results DIR fail STEP WHY   (or: skip STEP WHY)
    python benchmarks/gpu_check.py --results DIR report --out DIR --seconds S [--tiny]

Only the standard library is imported at module level: ``train``, ``ddp``, ``fail``, ``skip``
and ``report`` start without torch.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

STEPS = ("train", "ddp", "decode", "export")
#: JPEG 2000 / HTJ2K lossless: the transfer syntaxes the nvimgcodec plug-in is registered for.
LOSSLESS_J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202"}
#: JPEG 2000 / HTJ2K lossy: decoded by nvimgcodec only when called directly; compared within
#: a tolerance (the irreversible wavelet may round differently on the GPU), reported only.
LOSSY_J2K = {"1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.203"}


def emit(results: Path, step: str, status: str, text: str, **figures) -> int:
    """Print the step's line, write its record; the exit status (1 only for 'failed')."""
    line = {"ok": f"gpu_check: {step}: {text}",
            "skipped": f"gpu_check: {step}: skipped ({text})",
            "failed": f"gpu_check: {step}: FAILED ({text})"}[status]
    print(line, flush=True)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{step}.json").write_text(json.dumps(
        {"step": step, "status": status, "line": line, "figures": figures}, indent=1))
    return 1 if status == "failed" else 0


# ------------------------------------------------------------------ 1. training steps

def cmd_train(a) -> int:
    """Figures of ``benchmarks/train_gpu.py``'s output (model only vs fed by the loader)."""
    text = Path(a.log).read_text()
    dev = re.search(r"^device: (.+?)(?:;|$)", text, re.M)
    cfg = re.search(r"^(\S+), two views, (\d+)x\d+, batch (\d+), ([^,\n]+)", text, re.M)
    alone = re.search(r"model only \(synthetic tensors on (\w+)\):\s*([\d.]+) images/s", text)
    fed = re.search(r"fed by ShardStream \((\d+) workers\)\s*:\s*([\d.]+) images/s", text)
    if not (cfg and alone and fed):
        return emit(a.results, "train", "failed", "train_gpu.py printed no figures")
    model_ips, fed_ips = float(alone.group(2)), float(fed.group(2))
    figures = dict(device=dev.group(1).strip() if dev else "?", backbone=cfg.group(1),
                   size=int(cfg.group(2)), batch=int(cfg.group(3)), precision=cfg.group(4),
                   workers=int(fed.group(1)), model_only_images_s=model_ips,
                   fed_images_s=fed_ips,
                   ratio=round(fed_ips / model_ips, 3) if model_ips > 0 else None)
    if model_ips <= 0 or fed_ips <= 0:
        return emit(a.results, "train", "failed", f"images/s not positive: model only "
                    f"{model_ips}, fed {fed_ips}", **figures)
    return emit(a.results, "train", "ok",
                f"{figures['backbone']} two-view {figures['size']} px batch {figures['batch']} "
                f"{figures['precision']} on {figures['device']}: model only {model_ips:.1f} "
                f"images/s, fed by loader ({figures['workers']} workers) {fed_ips:.1f} images/s, "
                f"ratio {figures['ratio']:.2f} (target >= 0.90)", **figures)


# ------------------------------------------------------------------ 2. torchrun training

def _jsonl(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def cmd_ddp(a) -> int:
    """Figures of a finished ``torchrun ... mammotrain train`` run (it exited 0)."""
    fold = Path(a.run) / "fold0"
    need = [fold / "history.jsonl", fold / "train_log.rank0.jsonl", fold / "best.safetensors"]
    missing = [p.name for p in need if not p.exists()]
    if missing:
        return emit(a.results, "ddp", "failed", f"exit 0 but no {', '.join(missing)} in {fold}")
    history, ranks = _jsonl(need[0]), _jsonl(need[1])
    steps = sum(int(h["steps"]) for h in history)
    epoch_s = sum(float(h.get("seconds") or 0) for h in history)
    run_cfg = json.loads((Path(a.run) / "config.json").read_text())["config"]
    device = run_cfg.get("device", a.device)  # resolved by the trainer (auto -> cuda / cpu)
    amp = " AMP" if run_cfg.get("amp") and str(device).startswith("cuda") else ""
    figures = dict(device=device, amp=bool(amp), backbone=run_cfg.get("backbone"),
                   size=run_cfg.get("size"), batch=run_cfg.get("batch_size"),
                   world=int(ranks[-1]["world"]), epochs=len(history),
                   steps=steps, examples=sum(int(r["examples"]) for r in ranks),
                   epoch_seconds=round(epoch_s, 2), wall_s=round(a.wall, 1),
                   steps_s=round(steps / epoch_s, 3) if epoch_s > 0 else None)
    if steps <= 0:
        return emit(a.results, "ddp", "failed", "the run took no optimiser step", **figures)
    rate = f"{figures['steps_s']:.2f} steps/s" if figures["steps_s"] else "steps/s n/a"
    return emit(a.results, "ddp", "ok",
                f"torchrun --standalone --nproc_per_node 1 mammotrain train exit 0: "
                f"{figures['backbone']} two-view {figures['size']} px batch {figures['batch']} "
                f"on {device}{amp}, world {figures['world']}, {len(history)} epoch(s), {steps} "
                f"steps, {rate} (epochs incl. validation), wall {a.wall:.1f} s", **figures)


# ------------------------------------------------------------------ 3. GPU vs CPU decoding

def _nvimgcodec_missing() -> str | None:
    """Why the nvimgcodec plug-in cannot run here, or None when it can."""
    import ctypes.util

    from mammoprep.decoders import nvimgcodec as nv

    why = []
    if not nv._installed("nvidia.nvimgcodec"):
        why.append("nvidia-nvimgcodec not installed")
    if not (nv._installed("nvidia.nvjpeg2k") or ctypes.util.find_library("nvjpeg2k")):
        why.append("nvjpeg2k not installed")
    if nv.cuda_device_count() == 0:
        why.append("no CUDA device")
    return "; ".join(why) or None


def _time_decode(items, name: str, repeats: int, direct: bool = False):
    """(pixels per file, images/s) of decoder ``name`` over ``items`` (one warm-up pass)."""
    from mammoprep import decoders

    def one(ds, ts):
        if direct:  # a transfer syntax the plug-in is not registered for (lossy J2K)
            return decoders.run_plugin(name, ds, ts)
        px, used = decoders.decode(ds, ts, prefer=name)
        if used != name:
            raise RuntimeError(f"asked for decoder {name}, {used} decoded")
        return px

    pixels = [one(ds, ts) for _, ds, ts in items]  # warm-up (CUDA context, codec loading)
    t0 = time.perf_counter()
    for _ in range(repeats):
        for _, ds, ts in items:
            one(ds, ts)
    return pixels, repeats * len(items) / (time.perf_counter() - t0)


def cmd_decode(a) -> int:
    import numpy as np
    import pydicom

    from mammoprep import decoders

    files = []
    for p in map(Path, a.paths):
        files += sorted(p.rglob("*.dcm")) if p.is_dir() else [p] if p.exists() else []
    lossless, lossy = [], []
    for f in files:
        ds = pydicom.dcmread(f)
        ts = str(ds.file_meta.TransferSyntaxUID)
        if ts in LOSSLESS_J2K:
            lossless.append((f, ds, ts))
        elif ts in LOSSY_J2K:
            lossy.append((f, ds, ts))
    if not lossless:
        return emit(a.results, "decode", "failed", f"no lossless JPEG 2000 file in {a.paths}")
    ts0 = lossless[0][2]
    cpu = next(n for n in decoders.candidates(ts0) if n != "nvimgcodec")
    shape = f"{int(lossless[0][1].Rows)}x{int(lossless[0][1].Columns)}"
    cpu_px, cpu_ips = _time_decode(lossless, cpu, a.repeats)
    figures = dict(files=len(lossless), size=shape, cpu_decoder=cpu,
                   cpu_images_s=round(cpu_ips, 2), lossy_files=len(lossy))
    what = f"{len(lossless)} JPEG 2000 lossless files ({shape})"
    why = _nvimgcodec_missing()
    if why:
        return emit(a.results, "decode", "skipped",
                    f"nvimgcodec: {why}; CPU {cpu} {cpu_ips:.1f} images/s on {what}", **figures)
    gpu_px, gpu_ips = _time_decode(lossless, "nvimgcodec", a.repeats)
    same = [bool(c.dtype == g.dtype and np.array_equal(c, g)) for c, g in zip(cpu_px, gpu_px)]
    figures.update(gpu_images_s=round(gpu_ips, 2), speedup=round(gpu_ips / cpu_ips, 2),
                   identical=sum(same))
    lossy_txt = ""
    if lossy:  # reported, not a verdict: lossy stays on the CPU in mammoprep
        diffs = []
        for (_, ds, ts) in lossy:
            try:
                c = decoders.run_plugin(cpu, ds, ts).astype(np.int64)
                g = decoders.run_plugin("nvimgcodec", ds, ts).astype(np.int64)
                diffs.append(int(np.abs(c - g).max()) if c.shape == g.shape else
                             f"shapes {c.shape} vs {g.shape}")
            except Exception as exc:  # noqa: BLE001 - reported, not a verdict
                diffs.append(f"{type(exc).__name__}: {exc}"[:200])
        figures["lossy_max_abs_diff"] = diffs
        lossy_txt = ("; lossy J2K (not used on the GPU) max |diff| "
                     + ", ".join(map(str, diffs)))
    text = (f"nvimgcodec {gpu_ips:.1f} vs CPU {cpu} {cpu_ips:.1f} images/s "
            f"({gpu_ips / cpu_ips:.1f}x) on {what}, identical pixels {sum(same)}/{len(same)}"
            f"{lossy_txt}")
    if not all(same):
        return emit(a.results, "decode", "failed", text, **figures)
    return emit(a.results, "decode", "ok", text, **figures)


# ------------------------------------------------------------------ 4. ONNX export check

def cmd_export(a) -> int:
    """The exported ONNX graph against the PyTorch model (CPU, fp32) on one seeded batch,
    run by onnxruntime with the CUDA provider when it has one, else on the CPU."""
    try:
        import onnxruntime as ort
    except ImportError:
        return emit(a.results, "export", "skipped", "onnxruntime not installed")
    import numpy as np
    import torch

    from mammotrain.export import OnnxWrapper, load_for_export
    from mammotrain.tasks import get_task

    cfg, model, _ = load_for_export(a.model)
    task = get_task(cfg.task)
    wrapper = OnnxWrapper(model, task).eval()
    available = ort.get_available_providers()
    want = (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + \
        ["CPUExecutionProvider"]
    sess = ort.InferenceSession(str(a.onnx), providers=want)
    provider = sess.get_providers()[0]
    inp = sess.get_inputs()[0]
    views, rows, cols = (int(d) for d in inp.shape[1:2] + inp.shape[3:5])
    names = [o.name for o in sess.get_outputs()]
    x = torch.rand(a.batch, views, 1, rows, cols, generator=torch.Generator().manual_seed(0))
    got = sess.run(names, {inp.name: x.numpy()})
    with torch.no_grad():
        ref = wrapper(x)
    diff = {n: float(np.abs(g - r.numpy()).max()) for n, g, r in zip(names, got, ref)}
    scale = max(1.0, max(float(r.abs().max()) for r in ref))
    # CPU fp32 against CPU fp32: reordered sums only. The CUDA provider may use TF32 /
    # other conv algorithms: 10x looser.
    tol = (1e-2 if provider == "CUDAExecutionProvider" else 1e-3) * scale
    sess.run(names, {inp.name: x.numpy()})
    t0 = time.perf_counter()
    for _ in range(a.runs):
        sess.run(names, {inp.name: x.numpy()})
    ips = a.runs * a.batch * views / (time.perf_counter() - t0)
    worst = max(diff.values())
    figures = dict(provider=provider, providers_available=available, batch=a.batch,
                   input=[a.batch, views, 1, rows, cols], max_abs_diff=diff, tolerance=tol,
                   onnxruntime_images_s=round(ips, 2), onnxruntime=ort.__version__)
    fallback = "" if provider == want[0] else f" (asked for {want[0]})"
    text = (f"onnxruntime {ort.__version__} {provider}{fallback} vs torch: max |diff| "
            + ", ".join(f"{k} {v:.2e}" for k, v in diff.items())
            + f" (tolerance {tol:.1e}); {ips:.1f} images/s at batch {a.batch}")
    return emit(a.results, "export", "ok" if worst <= tol else "failed", text, **figures)


# ------------------------------------------------------------------ records and report

def cmd_mark(a) -> int:
    return emit(a.results, a.step, "failed" if a.cmd == "fail" else "skipped", a.why)


def cmd_report(a) -> int:
    recs = [json.loads((a.results / f"{s}.json").read_text()) for s in STEPS
            if (a.results / f"{s}.json").exists()]
    doc = {"tiny": a.tiny, "seconds": round(a.seconds, 1),
           "failed": [r["step"] for r in recs if r["status"] == "failed"],
           "steps": {r["step"]: r for r in recs}}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = [f"# gpu_check{' --tiny' if a.tiny else ''}: {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{a.seconds:.0f} s", "", "| step | status | figures |", "|---|---|---|"]
    md += [f"| {r['step']} | {r['status']} | "
           f"{r['line'].split(': ', 2)[-1].replace('|', chr(92) + '|')} |" for r in recs]
    (out / "gpu_check.md").write_text("\n".join(md) + "\n")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, required=True, help="folder of the step records")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train")
    p.add_argument("log")
    p = sub.add_parser("ddp")
    p.add_argument("run")
    p.add_argument("--wall", type=float, required=True)
    p.add_argument("--device", default="auto")
    p = sub.add_parser("decode")
    p.add_argument("paths", nargs="+")
    p.add_argument("--repeats", type=int, default=3)
    p = sub.add_parser("export")
    p.add_argument("model")
    p.add_argument("onnx")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    for name in ("fail", "skip"):
        p = sub.add_parser(name)
        p.add_argument("step", choices=STEPS)
        p.add_argument("why")
    p = sub.add_parser("report")
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--tiny", action="store_true")
    a = ap.parse_args(argv)
    fn = {"train": cmd_train, "ddp": cmd_ddp, "decode": cmd_decode, "export": cmd_export,
          "fail": cmd_mark, "skip": cmd_mark, "report": cmd_report}[a.cmd]
    if a.cmd not in STEPS:
        return fn(a)
    try:
        return fn(a)
    except Exception as exc:  # noqa: BLE001 - the step's line says why, the traceback above
        import traceback

        traceback.print_exc()
        return emit(a.results, a.cmd, "failed", " ".join(f"{type(exc).__name__}: {exc}".split()))


if __name__ == "__main__":
    sys.exit(main())
