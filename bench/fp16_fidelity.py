"""How close float16 runs get to float32: the project's fp16 ONNX graphs vs torch fp16
autocast, on the full-size realsr_v3 architecture.

    OMP_NUM_THREADS=1 python bench/fp16_fidelity.py --json fp16.json

One 64x64 LQ (a RealSet80 crop, or seeded noise without ../shared) is restored to
256x256 (untiled: latent 64x64, the default latent tile) by the full-size realsr_v3
architecture with seeded random weights (``export.bench.random_restorer``), every run
with the same weights and the same noise seed. The reference is torch float32.

Configurations: onnxruntime (CPU) over the float32 graphs, over the fp16 graphs of one
graph kind at a time, and over all three fp16 graphs (``export.fp16``); torch
``autocast(cpu, float16)`` of one module at a time and of all three (``TorchBackend``
"fp16": the codebook lookup outside autocast).

Per configuration, ``export.fidelity`` measures:

* end to end: PSNR of the 256x256 uint8 restore vs float32, and the share of latent
  positions of the final latent (what the decoder quantises) whose nearest codebook
  entry differs from float32's;
* each reduced graph alone, on the inputs the float32 run gave it: UNet x0 (every
  step; the worst) as PSNR over its value range and code flips; encoder latent PSNR
  and code flips; decoder image PSNR (8-bit range) from the float32 final latent.

Results: a markdown table on stdout and JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from export import fidelity  # noqa: E402


class Recorder:
    """A backend that passes every call to ``inner`` and keeps the inputs and outputs
    (to feed the float32 run's tensors to each graph alone, and to read the final
    latent)."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.unet_calls: list[tuple] = []
        self.encoded: list[tuple] = []
        self.decoded: list[tuple] = []

    def unet_fn(self):
        run = self.inner.unet_fn()

        def record(x, t, lq, mask):
            out = run(x, t, lq, mask)
            self.unet_calls.append((x.detach().clone(), t.clone(),
                                    None if lq is None else lq.detach().clone(),
                                    None if mask is None else mask.detach().clone(),
                                    out.detach().float().clone()))
            return out
        return record

    def encode(self, image):
        z = self.inner.encode(image)
        self.encoded.append((image.detach().clone(), z.detach().float().clone()))
        return z

    def decode(self, z, quantize=True):
        out = self.inner.decode(z, quantize=quantize)
        self.decoded.append((z.detach().float().clone(), out.detach().float().clone()))
        return out

    def describe(self):
        return self.inner.describe()


def lq_image(size: int) -> tuple[np.ndarray, str]:
    folder = REPO.parent / "shared" / "data" / "realset80"
    if folder.is_dir():
        from PIL import Image
        path = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg"))[0]
        im = np.asarray(Image.open(path).convert("RGB"))
        top, left = (im.shape[0] - size) // 2, (im.shape[1] - size) // 2
        return np.ascontiguousarray(im[top:top + size, left:left + size]), f"{path.name} crop"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "seeded noise"


def run(restorer, backend, image, seed):
    rec = Recorder(backend)
    with torch.no_grad():
        t0 = time.perf_counter()
        out = restorer.using(rec).restore(image, seed=seed, tile=0)
        took = time.perf_counter() - t0
    return out, rec, took


def alone(kind: str, backend, ref: Recorder, codebook) -> dict:
    """The reduced graph of ``kind`` on the float32 run's inputs."""
    with torch.no_grad():
        if kind == "unet":
            den = backend.unet_fn()
            psnrs, flips = [], []
            for x, t, lq, mask, x0 in ref.unet_calls:
                got = den(x, t, lq, mask).float()
                psnrs.append(fidelity.range_psnr(got, x0))
                flips.append(fidelity.code_flips(got, x0, codebook))
            return {"alone_psnr_db": fidelity.worst(psnrs),
                    "alone_flips": fidelity.worst(flips, lower_is_worse=False)}
        if kind == "encoder":
            image, z = ref.encoded[0]
            got = backend.encode(image).float()
            return {"alone_psnr_db": fidelity.range_psnr(got, z),
                    "alone_flips": fidelity.code_flips(got, z, codebook)}
        z, img = ref.decoded[0]
        got = backend.decode(z).float()
        return {"alone_psnr_db": fidelity.image_psnr(got, img)}


def compare(restorer, image: np.ndarray, seed: int, cache: Path,
            log=lambda line: print(line, flush=True)) -> dict:
    """Every configuration against torch float32 on ``restorer`` (its device: the torch
    runs there; onnxruntime on its CUDA provider when it has one, else the CPU). Returns
    the rows, the verdict per graph kind, the export checks and a markdown table."""
    from export.backends import OnnxRuntimeBackend, TorchBackend
    from export.fp16 import GraphPrecisions

    codebook = restorer.autoencoder.quantize.embedding.weight.detach().float().cpu()
    ref_out, ref, ref_s = run(restorer, TorchBackend(restorer, "fp32"), image, seed)
    z_ref = ref.decoded[0][0].cpu()
    rows = []

    def add(config: str, family: str, reduced: str, backend) -> None:
        out, rec, took = run(restorer, backend, image, seed)
        row = {"config": config, "family": family, "reduced": reduced,
               "psnr_db": fidelity.uint8_psnr(out, ref_out),
               "flips": fidelity.code_flips(rec.decoded[0][0].cpu(), z_ref, codebook),
               "seconds": round(took, 2)}
        if reduced in ("unet", "encoder", "decoder"):
            row.update(alone(reduced, backend, ref, codebook))
        rows.append(row)
        log(json.dumps(row))

    side = image.shape[0] * restorer.scale // restorer.factor      # the latent tile

    def ort(precisions: str):
        backend = OnnxRuntimeBackend(restorer, None, cache=cache)
        backend.store.precisions = GraphPrecisions.parse(precisions)
        # measure, never refuse: the export checks' numbers are reported below
        backend.store.limits = {key: {m: (0.0 if m in fidelity.LOWER_BOUNDS else 1.0)
                                      for m in bounds}
                                for key, bounds in fidelity.CHECK_LIMITS.items()}
        backend.prepare([(side, side)])           # export and open before timing
        return backend

    add("onnxruntime fp32 graphs", "onnx", "none", ort("fp32"))
    for kind in ("unet", "encoder", "decoder"):
        add(f"onnxruntime {kind} fp16", "onnx", kind, ort(f"{kind}=fp16"))
    add("onnxruntime all fp16", "onnx", "all", ort("fp16"))
    flags = {"unet": "bf16_unet", "encoder": "bf16_encoder", "decoder": "bf16_decoder"}
    for kind in ("unet", "encoder", "decoder"):
        tb = TorchBackend(restorer, "fp16")
        for other, flag in flags.items():     # autocast for this module only
            setattr(tb, flag, other == kind)
        add(f"torch autocast {kind} fp16", "autocast", kind, tb)
    add("torch autocast all fp16", "autocast", "all", TorchBackend(restorer, "fp16"))

    # the graphs' own export checks, as the manifest recorded them
    checks = {}
    manifest = json.loads(next(Path(cache).glob("onnx/*/manifest.json")).read_text())
    for g in manifest["graphs"]:
        checks[g["file"]] = {"measures": g.get("measures"), "limits": g.get("limits"),
                             "rel_err": g["rel_err"], "fp16": g.get("fp16")}

    verdict = {}
    for reduced in ("unet", "encoder", "decoder", "all"):
        o = next(r for r in rows if r["family"] == "onnx" and r["reduced"] == reduced)
        a = next(r for r in rows if r["family"] == "autocast" and r["reduced"] == reduced)
        verdict[reduced] = bool(o["psnr_db"] >= a["psnr_db"] and o["flips"] <= a["flips"])
    columns = [("config", "configuration"), ("psnr_db", "end-to-end PSNR dB"),
               ("flips", "end-to-end code flips"), ("alone_psnr_db", "graph alone PSNR dB"),
               ("alone_flips", "graph alone code flips"), ("seconds", "restore s")]
    table = fidelity.markdown_table(rows, columns)
    table += ("\n\nfp16 graphs at least as close to float32 as autocast (PSNR and flips): "
              + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in verdict.items()))
    return {"fp32_restore_s": round(ref_s, 2), "rows": rows,
            "fp16_at_least_as_close": verdict, "graph_checks": checks, "markdown": table}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64, help="LQ side (default 64 -> 256)")
    ap.add_argument("--seed", type=int, default=7, help="noise seed of every run")
    ap.add_argument("--small", action="store_true",
                    help="the reduced-width architecture (a quick trial)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="graph folder root (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from export.bench import random_restorer

    restorer = random_restorer("realsr_v3", small=args.small)
    image, source = lq_image(args.size)
    cache = args.cache or Path(tempfile.mkdtemp(prefix="fp16-fidelity-"))
    print(f"model realsr_v3{' (reduced width)' if args.small else ''}, random weights; "
          f"LQ {source} {args.size}x{args.size}; graphs under {cache}", flush=True)
    result = compare(restorer, image, args.seed, cache)
    print()
    print(result["markdown"])
    result.update({"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or
                   platform.machine(), "torch": torch.__version__,
                   "threads": torch.get_num_threads(), "small": args.small, "lq": source,
                   "size": args.size, "seed": args.seed})
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
