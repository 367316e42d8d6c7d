"""One-shot GPU check: everything a CUDA node must prove, in one run, into one folder.

    python bench/gpu_check.py OUT_DIR                 # on a GPU machine (make gpu-check)
    python bench/gpu_check.py OUT_DIR --dry-run       # on a CPU: every stage but CUDA

Stages, each timed and reported whether it passed, failed or was skipped (and why):

``environment``  torch, CUDA, the GPU and its compute capability, the TensorRT /
                 onnxruntime modules found, the repository's commit.
``pytest_gpu``   ``pytest -m gpu`` (the tests that skip without CUDA).
``engines``      fp16 TensorRT engines built (or found) for the model, when a TensorRT
                 module imports (``tensorrt`` 10/11 or ``tensorrt_rtx``).
``fidelity``     fp16 against fp32 on the same weights and noise: the project's fp16
                 graphs and an fp16 autocast run of the same modules, PSNR and the share
                 of latent positions whose codebook entry changed.
``throughput``   images/s at batch 1, 8 and 32 for 64 -> 256 per backend, and one
                 256 -> 1024 restore.
``service``      ``resshift serve`` on the device with 16 concurrent requests: p50/p95
                 latency and the mean batch the workers formed.

Writes ``OUT_DIR/gpu_check.json`` and ``OUT_DIR/gpu_check.md``; exits 1 when a stage
failed. The model is the full-size realsr_v3 architecture with seeded random weights
(speed and the fp16-vs-fp32 comparison do not need the trained weights); ``--dry-run``
uses a reduced-width model of the same architecture on the CPU so the whole script runs
in CI in a minute. Packages it needs beyond PyTorch: ``bench/gpu_requirements.txt``
(docs/gpu.md says how to carry them as wheels to a machine without a network).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

STAGES = ("environment", "pytest_gpu", "engines", "fidelity", "throughput", "service")


@dataclass
class Context:
    out: Path
    dry_run: bool
    device: str
    work: Path                      # scratch: model directory, graphs, engines
    restorer: object = None
    model_dir: Optional[Path] = None
    log: Callable[[str], None] = print

    @property
    def batches(self) -> tuple[int, ...]:
        return (1, 2) if self.dry_run else (1, 8, 32)

    @property
    def max_batch(self) -> int:
        return max(self.batches)


@dataclass
class StageResult:
    name: str
    status: str = "passed"          # passed | failed | skipped
    seconds: float = 0.0
    why: str = ""
    data: dict = field(default_factory=dict)


class Skip(Exception):
    """A stage that cannot run here, with the reason (not a failure)."""


# -- the model -------------------------------------------------------------------------
def build_model(ctx: Context):
    """The model every stage uses, saved once as a model directory (the service loads it)."""
    import model
    from export.bench import RANDOM_MODEL, RANDOM_SMALL, load_restorer

    spec = RANDOM_SMALL if ctx.dry_run else RANDOM_MODEL
    restorer = load_restorer(spec, "cpu")
    ctx.model_dir = Path(model.save(restorer, ctx.work / "model"))
    ctx.restorer = model.load(ctx.model_dir, device=ctx.device)
    return spec


# -- stages ----------------------------------------------------------------------------
def stage_environment(ctx: Context) -> dict:
    import importlib.metadata as md

    def version(dist: str) -> Optional[str]:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
            "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "dry_run": ctx.dry_run, "device": ctx.device}
    if torch.cuda.is_available():
        dev = torch.device(ctx.device if ctx.device.startswith("cuda") else "cuda:0")
        props = torch.cuda.get_device_properties(dev)
        info.update(gpu=props.name, compute_capability=f"{props.major}.{props.minor}",
                    gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count)
    elif not ctx.dry_run:
        raise RuntimeError("no CUDA device visible to torch: run with --dry-run on a CPU")
    from export.tensorrt import resolve_tensorrt_module
    info["tensorrt_module"] = _describe_trt(resolve_tensorrt_module)
    for dist in ("onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-cu13",
                 "tensorrt-rtx-cu13", "fastapi", "numpy"):
        info[f"pkg:{dist}"] = version(dist)
    try:
        import onnxruntime
        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        info["onnxruntime_providers"] = []
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                        capture_output=True, text=True,
                                        timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def _describe_trt(resolve) -> str:
    try:
        mod = resolve()
    except Exception as exc:  # noqa: BLE001 - reported, not raised: TensorRT is optional
        return f"none ({exc})"
    return f"{mod.__name__} {mod.__version__}"


def stage_pytest_gpu(ctx: Context) -> dict:
    """``pytest -m gpu``; on a CPU they all skip, which still proves they import."""
    xml = ctx.out / "pytest_gpu.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
           f"--junitxml={xml}", "tests"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    counts = _junit_counts(xml)
    if proc.returncode not in (0, 5):            # 5: nothing collected
        raise RuntimeError(f"pytest -m gpu exited {proc.returncode}:\n{tail}")
    return {**counts, "tail": tail}


def _junit_counts(path: Path) -> dict:
    import xml.etree.ElementTree as ET
    if not path.is_file():
        return {}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    n["passed"] = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    return n


def stage_engines(ctx: Context) -> dict:
    from export.errors import BackendUnavailable
    from export.tensorrt import build_engines, resolve_tensorrt_module

    try:
        mod = resolve_tensorrt_module()
    except BackendUnavailable as exc:
        raise Skip(str(exc)) from None
    # on a CPU only an ahead-of-time builder (TensorRT-RTX) can build
    target = None if torch.cuda.is_available() else "8.6"
    if target and not mod.__name__.startswith("tensorrt_rtx"):
        raise Skip(f"{mod.__name__} needs a GPU to build engines")
    started = time.perf_counter()
    # the builder exports from a float32 CPU copy of the modules itself
    paths = build_engines(ctx.restorer, ctx.model_dir, tile=64, max_batch=ctx.max_batch,
                          precision="fp16", compute_capability=target,
                          progress=ctx.log)
    took = time.perf_counter() - started
    return {"module": f"{mod.__name__} {mod.__version__}", "build_s": round(took, 1),
            "engines": [{"file": p.name, "mib": round(p.stat().st_size / 2**20, 1)}
                        for p in paths],
            "target_compute_capability": target or "the visible GPU"}


def stage_fidelity(ctx: Context) -> dict:
    """fp16 graphs and fp16 autocast against fp32, same weights and noise (64 -> 256)."""
    from bench.fp16_fidelity import compare

    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return compare(ctx.restorer, image, seed=7, cache=ctx.work / "fidelity", log=ctx.log)


def stage_throughput(ctx: Context) -> dict:
    from export.bench import run_bench
    from export.errors import BackendUnavailable

    configs = ["torch-fp32"] if ctx.dry_run else ["tensorrt", "onnxruntime", "torch-fp16",
                                                  "torch-fp32"]
    rows, skipped = [], {}
    for config in configs:
        try:
            rows += run_bench(ctx.restorer, [config], ctx.batches, [64],
                              repeat=1 if ctx.dry_run else 3, model_dir=ctx.model_dir,
                              progress=ctx.log)
        except BackendUnavailable as exc:
            skipped[config] = str(exc)
    large = _large_restore(ctx)
    return {"rows": [r.__dict__ for r in rows], "skipped": skipped, "large": large}


def _large_restore(ctx: Context) -> dict:
    """One 256 -> 1024 restore (tiled: latent tiles of 64, VAE tiles) on the default
    backend, timed after a warm-up at the same shape."""
    from export.families import create_backend

    side = 64 if ctx.dry_run else 256
    backend = create_backend("auto", ctx.restorer, model_dir=ctx.model_dir, precision="auto")
    r = ctx.restorer.using(backend)
    image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    r.restore(image, seed=0)
    _sync(ctx)
    start = time.perf_counter()
    out = r.restore(image, seed=0)
    _sync(ctx)
    return {"lq": side, "out": int(out.shape[0]), "backend": backend.describe(),
            "seconds": round(time.perf_counter() - start, 3)}


def _sync(ctx: Context) -> None:
    if ctx.device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(ctx.device))


def stage_service(ctx: Context) -> dict:
    """``resshift serve`` on the device, 16 (dry run: 4) concurrent 64x64 requests."""
    import httpx

    clients = 4 if ctx.dry_run else 16
    port = _free_port()
    env = dict(os.environ, RESSHIFT_MODELS=f"sr={ctx.model_dir}", RESSHIFT_DEVICES=ctx.device,
               RESSHIFT_BACKEND="auto", RESSHIFT_PRECISION="auto",
               RESSHIFT_MAX_BATCH=str(ctx.max_batch if not ctx.dry_run else 8),
               RESSHIFT_CACHE_DIR=str(ctx.work / "cache"), PYTHONUNBUFFERED="1")
    log_path = ctx.out / "service.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "resshift", "serve", "--port",
                                 str(port)], cwd=REPO, env=env, stdout=log_file,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        ready_s = _wait_ready(base, proc, timeout=240)
        png = _png(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
        with httpx.Client(timeout=120) as client:
            client.post(f"{base}/v1/restore", files={"image": ("w.png", png)})  # warm-up
            before = _batch_metric(client.get(f"{base}/metrics").text)
            latencies, codes = _concurrent(base, png, clients)
            after = _batch_metric(client.get(f"{base}/metrics").text)
            info = client.get(f"{base}/v1/models").json()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    calls = after[1] - before[1]
    if any(c != 200 for c in codes):
        raise RuntimeError(f"status codes {sorted(set(codes))}; see {log_path.name}")
    return {"clients": clients, "ready_s": round(ready_s, 1),
            "p50_s": round(statistics.median(latencies), 4),
            "p95_s": round(float(np.percentile(latencies, 95)), 4),
            "mean_batch": round((after[0] - before[0]) / calls, 2) if calls else None,
            "models": info}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(base: str, proc: subprocess.Popen, timeout: float) -> float:
    import httpx
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"resshift serve exited with {proc.returncode} before ready")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"not ready within {timeout:.0f} s")


def _png(pixels: np.ndarray) -> bytes:
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _batch_metric(text: str) -> tuple[float, float]:
    """(sum, count) of resshift_batch_size over all tasks."""
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("resshift_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("resshift_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def _concurrent(base: str, png: bytes, clients: int) -> tuple[list[float], list[int]]:
    import httpx
    latencies: list[float] = []
    codes: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def one(i: int) -> None:
        with httpx.Client(timeout=300) as c:
            barrier.wait()
            t0 = time.perf_counter()
            r = c.post(f"{base}/v1/restore", files={"image": ("x.png", png)},
                       data={"seed": str(i)})
            with lock:
                latencies.append(time.perf_counter() - t0)
                codes.append(r.status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, codes


# -- report ----------------------------------------------------------------------------
def markdown(results: list[StageResult], meta: dict) -> str:
    lines = [f"# GPU check ({'dry run, CPU' if meta['dry_run'] else meta.get('gpu', '?')})",
             "", f"{meta['when']}, model {meta['model']}, commit {meta.get('commit')}", "",
             "| stage | status | s | note |", "|---|---|---|---|"]
    for r in results:
        note = r.why.splitlines()[0][:160] if r.why else ""
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {note} |")
    for r in results:
        if r.name == "throughput" and r.status == "passed":
            lines += ["", "## Throughput (images/s)", "",
                      "| config | batch | LQ -> out | total s | img/s |", "|---|---|---|---|---|"]
            for row in r.data["rows"]:
                lines.append(f"| {row['config']} | {row['batch']} | {row['lq']} -> "
                             f"{row['out']} | {row['total_s']} | {row['images_per_s']} |")
            big = r.data["large"]
            lines.append(f"\n{big['lq']} -> {big['out']}: {big['seconds']} s on "
                         f"{big['backend']}")
        if r.name == "service" and r.status == "passed":
            d = r.data
            lines += ["", f"## Service: {d['clients']} concurrent requests: p50 {d['p50_s']} s, "
                      f"p95 {d['p95_s']} s, mean batch {d['mean_batch']}"]
        if r.name == "fidelity" and r.status == "passed" and "markdown" in r.data:
            lines += ["", "## fp16 vs fp32", "", r.data["markdown"]]
    return "\n".join(lines) + "\n"


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = args.device or ("cpu" if args.dry_run else "cuda:0")
    wanted = args.stages.split(",") if args.stages else list(STAGES)
    unknown = sorted(set(wanted) - set(STAGES))
    if unknown:
        print(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        ctx = Context(out=out, dry_run=args.dry_run, device=device, work=Path(tmp),
                      log=lambda line: print(f"  {line}", flush=True))
        os.environ.setdefault("RESSHIFT_CACHE_DIR", str(ctx.work / "cache"))
        meta = {"when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "dry_run": args.dry_run,
                "device": device}
        print(f"building the model ({'reduced width' if args.dry_run else 'full size'}) ...",
              flush=True)
        meta["model"] = build_model(ctx)
        results = []
        for name in STAGES:
            if name not in wanted:
                continue
            print(f"[{name}] ...", flush=True)
            res = StageResult(name)
            start = time.perf_counter()
            try:
                res.data = globals()[f"stage_{name}"](ctx) or {}
            except Skip as exc:
                res.status, res.why = "skipped", str(exc)
            except Exception as exc:  # noqa: BLE001 - a failed stage must not stop the others
                res.status, res.why = "failed", f"{type(exc).__name__}: {exc}"
                res.data = {"traceback": traceback.format_exc()}
            res.seconds = time.perf_counter() - start
            if name == "environment":
                meta.update({k: res.data.get(k) for k in ("gpu", "commit")})
            print(f"[{name}] {res.status} in {res.seconds:.1f} s"
                  + (f": {res.why.splitlines()[0]}" if res.why else ""), flush=True)
            results.append(res)
            _write(out, results, meta)
    failed = [r.name for r in results if r.status == "failed"]
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _write(out: Path, results: list[StageResult], meta: dict) -> None:
    payload = {"meta": meta, "stages": [r.__dict__ for r in results]}
    (out / "gpu_check.json").write_text(json.dumps(payload, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(results, meta))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="folder for gpu_check.json, gpu_check.md and logs")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU only: a reduced-width model, small batches, no CUDA")
    ap.add_argument("--device", help="default cuda:0 (cpu with --dry-run)")
    ap.add_argument("--stages", help=f"comma-separated subset of {', '.join(STAGES)}")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
