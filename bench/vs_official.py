"""The project's default CPU path against the authors' ResShift implementation, same
machine, same run, same random full-size weights (the realsr_v3 architecture).

    python bench/vs_official.py --official /path/to/ResShift-checkout \
        --official-python /path/to/venv/bin/python --threads 2 --repeats 3 --large

``--official`` is a checkout of github.com/zsyOAOA/ResShift that the user points to;
nothing of it is copied here. Its Python needs its inference dependencies (omegaconf,
loguru, einops, opencv-python-headless, scipy, scikit-image and torch); torchvision,
timm and its training data pipeline are not needed: this script gives the authors'
modules small stand-ins for the three names they import from those
(``timm.models.layers``: DropPath, to_2tuple, trunc_normal_; ``datapipe.datasets``,
only used for training) and runs their own ``ResShiftSampler.sample_func`` on the CPU,
with their hard-coded ``.cuda()`` calls and ``map_location="cuda:0"`` redirected
in-process and CUDA autocast off (fp32).

Steps, each in its own process so that timings and peak memory are clean:

1. the authors' code builds the UNet and the VQGAN of
   ``configs/realsr_swinunet_realesrgan256_journal.yaml`` with seeded random weights and
   saves them as their checkpoints;
2. ``resshift import-official --preset realsr_v3`` turns those into a model directory;
3. each implementation restores the same 64x64 image (and 256x256 with ``--large``):
   one warm-up, then ``--repeats`` timed runs, sampler only (models loaded before);
   their peak RSS is read from /proc.

It prints seconds per image, the ratio (authors / project: above 1 means the project is
faster), peak RSS, and whether 256 -> 1024 completed (each large run has
``--large-timeout`` seconds); with ``--large`` also the project's time per output pixel at
256 -> 1024 over that at 64 -> 256. ``--json`` keeps everything. The large-image ratio
alone, from the weights of an earlier run::

    python bench/vs_official.py --project-only --large --work WORK
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/realsr_swinunet_realesrgan256_journal.yaml"


# -- inside the authors' process ------------------------------------------------------------
def _official_environment(checkout: Path, threads: int):
    """Import the authors' modules from ``checkout`` ready for the CPU (see module doc)."""
    import torch
    torch.set_num_threads(threads)
    sys.path.insert(0, str(checkout))
    # stand-ins for imports their inference never uses (torchvision does not install
    # beside this torch; timm pulls it in)
    layers = types.ModuleType("timm.models.layers")

    class DropPath(torch.nn.Module):          # drop_path is 0 at inference: identity
        def __init__(self, *args, **kwargs):
            super().__init__()

        def forward(self, x):
            return x
    layers.DropPath = DropPath
    layers.to_2tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    layers.trunc_normal_ = lambda tensor, std=1.0, **kw: torch.nn.init.trunc_normal_(tensor, std=std)
    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    timm.models, models.layers = models, layers
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})
    datasets = types.ModuleType("datapipe.datasets")
    datasets.create_dataset = None
    sys.modules["datapipe.datasets"] = datasets
    # CUDA calls redirected to the CPU
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
    real_load = torch.load
    torch.load = lambda f, *a, **k: real_load(f, map_location="cpu",
                                              **{x: y for x, y in k.items() if x != "map_location"})
    torch.cuda.manual_seed_all = lambda *a, **k: None
    from omegaconf import OmegaConf
    configs = OmegaConf.load(checkout / CONFIG)
    return torch, configs


def official_make_weights(checkout: Path, out: Path) -> None:
    torch, configs = _official_environment(checkout, 1)
    from utils import util_common
    torch.manual_seed(0)
    unet = util_common.instantiate_from_config(configs.model)
    vae = util_common.instantiate_from_config(configs.autoencoder)
    torch.save(unet.state_dict(), out / "unet.pth")
    torch.save(vae.state_dict(), out / "autoencoder.pth")


def official_time(checkout: Path, weights: Path, image: Path, threads: int, repeats: int) -> dict:
    torch, configs = _official_environment(checkout, threads)
    import numpy as np
    from PIL import Image

    from sampler import ResShiftSampler
    configs.model.ckpt_path = str(weights / "unet.pth")
    configs.autoencoder.ckpt_path = str(weights / "autoencoder.pth")
    configs.diffusion.params.sf = 4
    sampler = ResShiftSampler(configs, sf=4, use_amp=False, chop_size=256, chop_stride=224,
                              chop_bs=1, seed=12345,
                              padding_offset=configs.model.params.get("lq_size", 64))
    lq = np.asarray(Image.open(image).convert("RGB"), np.float32) / 255.0
    y0 = torch.from_numpy(lq).permute(2, 0, 1)[None] * 2 - 1
    # what their inference does for an image within one chop: sample_func, no mask
    return _time(lambda: sampler.sample_func(y0, mask=None), repeats)


# -- inside the project's process -----------------------------------------------------------
def project_time(model_dir: Path, image: Path, threads: int, repeats: int, backend: str,
                 precision: str) -> dict:
    import numpy as np
    import torch
    from PIL import Image
    torch.set_num_threads(threads)
    sys.path.insert(0, str(REPO))
    import model
    from export.families import create_backend
    restorer = model.load(model_dir)
    used = create_backend(backend, restorer, model_dir=model_dir, tile=None, precision=precision)
    restorer = restorer.using(used)
    lq = np.asarray(Image.open(image).convert("RGB"))
    result = _time(lambda: restorer.restore(lq, seed=0), repeats)
    result["backend"] = used.describe()
    # what decides the project's CPU path: the flags, and whether bf16 measured faster
    from export.backends import cpu_flags
    from export.cpu_probe import bf16_speedup
    result["cpu_flags"] = sorted(f for f in cpu_flags()
                                 if f.startswith(("avx512", "amx", "avx_vnni")))
    result["bf16_speedup"] = round(bf16_speedup(), 3)
    return result


def _time(fn, repeats: int) -> dict:
    import torch
    with torch.no_grad():
        start = time.monotonic()
        fn()                                   # warm-up (kernels, graph sessions)
        warm = time.monotonic() - start
        runs = []
        for _ in range(repeats):
            start = time.monotonic()
            fn()
            runs.append(time.monotonic() - start)
    return {"warmup_s": warm, "runs_s": runs, "best_s": min(runs),
            "median_s": sorted(runs)[len(runs) // 2], "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> Optional[float]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# -- the driver -------------------------------------------------------------------------------
def _child(python: str, *args: str, timeout: float) -> dict:
    cmd = [python, str(Path(__file__).resolve()), "--child", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=str(REPO), env={**os.environ, "OMP_NUM_THREADS": args[-1]
                                                  if args and args[-1].isdigit() else "2"})
    except subprocess.TimeoutExpired:
        return {"failed": True, "error": f"did not finish within {timeout:.0f} s", "log": ""}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-3000:]
        lines = tail.strip().splitlines()
        errors = [line for line in lines if "Error" in line or "error:" in line]
        if proc.returncode < 0:
            # no traceback: a signal; SIGKILL is what the out-of-memory killer sends
            error = f"killed by signal {-proc.returncode}" + (
                " (out of memory?)" if proc.returncode == -9 else "")
        else:
            error = errors[-1] if errors else (lines[-1] if lines else
                                               f"exit {proc.returncode}")
        return {"failed": True, "error": error, "returncode": proc.returncode, "log": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_image(side: int, path: Path) -> None:
    import numpy as np
    from PIL import Image
    folder = REPO.parent / "shared" / "data" / "realset80"
    pics = sorted(folder.glob("*")) if folder.is_dir() else []
    if pics:
        im = Image.open(pics[0]).convert("RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        im = im.resize((side, side), Image.BICUBIC)
    else:
        rng = np.random.default_rng(0)
        im = Image.fromarray((rng.random((side // 4, side // 4, 3)) * 255).astype(np.uint8))
        im = im.resize((side, side), Image.BICUBIC)
    im.save(path)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        role, rest = argv[1], argv[2:]
        if role == "weights":
            official_make_weights(Path(rest[0]), Path(rest[1]))
            print(json.dumps({"ok": True}))
        elif role == "official":
            print(json.dumps(official_time(Path(rest[0]), Path(rest[1]), Path(rest[2]),
                                           int(rest[4]), int(rest[3]))))
        else:
            print(json.dumps(project_time(Path(rest[0]), Path(rest[1]), int(rest[5]),
                                          int(rest[2]), rest[3], rest[4])))
        return 0
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", type=Path, help="a ResShift checkout (needed unless "
                   "--project-only)")
    p.add_argument("--official-python", default=sys.executable,
                   help="a Python with the authors' inference dependencies")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backend", default="auto", help="the project's backend (default: auto)")
    p.add_argument("--precision", default="auto", help="the project's precision (auto)")
    p.add_argument("--large", action="store_true", help="also 256x256 -> 1024x1024")
    p.add_argument("--large-repeats", type=int, default=1,
                   help="timed runs at 256 -> 1024 after the warm-up (default 1)")
    p.add_argument("--large-timeout", type=float, default=1800,
                   help="seconds before a 256 -> 1024 run counts as not completed")
    p.add_argument("--project-only", action="store_true",
                   help="run only the project (no checkout needed): the large-image "
                        "ratio with --large")
    p.add_argument("--work", type=Path, help="keep weights and images here")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.project_only:
        args.official = None
    elif args.official is None:
        raise SystemExit("--official PATH (a ResShift checkout) is needed, or --project-only")
    elif not (args.official / CONFIG).is_file():
        raise SystemExit(f"{args.official} is not a ResShift checkout (no {CONFIG})")
    work = args.work or Path(tempfile.mkdtemp(prefix="vs_official_"))
    work.mkdir(parents=True, exist_ok=True)
    weights = work / "weights"
    weights.mkdir(exist_ok=True)
    if not (weights / "unet.pth").is_file():
        if args.official is None:
            raise SystemExit(f"no weights in {weights}: the authors' code builds them; run "
                             f"once with --official, or point --work at an earlier run's")
        made = _child(args.official_python, "weights", str(args.official), str(weights),
                      timeout=1800)
        if made.get("failed"):
            raise SystemExit(f"the authors' code could not build the networks:\n{made['log']}")
    model_dir = work / "realsr_v3_random"
    if not (model_dir / "model.json").is_file():
        subprocess.run([sys.executable, "-m", "resshift", "import-official", "--preset",
                        "realsr_v3", "--unet", str(weights / "unet.pth"), "--autoencoder",
                        str(weights / "autoencoder.pth"), "-o", str(model_dir)],
                       check=True, cwd=str(REPO))
    sizes = [64] + ([256] if args.large else [])
    results = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "sizes": {}}
    for side in sizes:
        image = work / f"lq{side}.png"
        make_image(side, image)
        t = str(args.threads)
        repeats = str(args.repeats if side == 64 else args.large_repeats)
        timeout = 7200 if side == 64 else args.large_timeout
        row = {}
        if args.official is not None:
            row["official"] = _child(args.official_python, "official", str(args.official),
                                     str(weights), str(image), repeats, t, timeout=timeout)
        project = row["project"] = _child(sys.executable, "project", str(model_dir),
                                          str(image), repeats, args.backend, args.precision,
                                          t, timeout=timeout)
        official = row.get("official")
        if official and not official.get("failed") and not project.get("failed"):
            row["ratio"] = official["median_s"] / project["median_s"]
        results["sizes"][side] = row
        print(f"{side}->{side * 4}: "
              + (f"authors {_fmt(official)}  " if official else "")
              + f"project {_fmt(project)}"
              + (f"  ratio {row['ratio']:.2f}x" if "ratio" in row else ""), flush=True)
    if args.large:
        large = results["sizes"][256]
        if "ratio" not in large:
            print("256->1024: " + ", ".join(
                f"{who} {'failed: ' + r['error'] if r.get('failed') else 'completed'}"
                for who, r in large.items() if who in ("official", "project")))
        small, big = results["sizes"][64]["project"], large["project"]
        if not small.get("failed") and not big.get("failed"):
            # seconds per output pixel at 1024x1024 over those at 256x256 (16x the pixels)
            per_pixel = big["median_s"] / 16 / small["median_s"]
            results["large_cost_per_pixel"] = per_pixel
            print(f"project, 256->1024 against 64->256: {per_pixel:.2f}x the time per output "
                  f"pixel, peak RSS {big['peak_rss_mb']:.0f} MB", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def _fmt(r: dict) -> str:
    if r.get("failed"):
        return f"FAILED ({r['error'][:120]})"
    return f"{r['median_s']:.2f} s (peak {r['peak_rss_mb']:.0f} MB)"


if __name__ == "__main__":
    raise SystemExit(main())
