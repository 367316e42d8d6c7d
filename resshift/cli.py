"""``resshift``: the one console script. Subcommands live in small functions below.

Examples::

    resshift restore photo.jpg -o photo_x4.png
    resshift restore inputs/ -o outputs/ --model models/realsr_v3 --seed 1 --tile 64
    resshift import-official --preset realsr_v3 --unet resshift_realsrx4_s4_v3.pth \\
        --autoencoder autoencoder_vq_f4.pth -o models/realsr_v3
    resshift import-official --family diffir --config test_DiffIRS2_x4.yml \\
        --weights net_g_latest.pth -o models/diffir_x4
    RESSHIFT_MODELS=sr=models/realsr_v3 resshift serve --port 8000
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

log = logging.getLogger("resshift")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _collect_inputs(inputs: Sequence[str]) -> list[tuple[Path, Path]]:
    """(file, name relative to its root) for every image file named or under a folder."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
                found.append((f, f.relative_to(path)))
        else:
            found.append((path, Path(path.name)))
    return found


def _output_path(out: Path, rel: Path, single_file: bool, fmt: Optional[str]) -> Path:
    if single_file and out.suffix.lower() in IMAGE_SUFFIXES:
        return out
    suffix = "." + fmt if fmt else (rel.suffix.lower() if rel.suffix.lower() in
                                     {".png", ".jpg", ".jpeg", ".webp"} else ".png")
    return out / rel.with_suffix(suffix)


def _find_mask(mask_arg: Optional[str], rel: Path) -> Optional[Path]:
    if mask_arg is None:
        return None
    mask = Path(mask_arg)
    if mask.is_dir():
        for candidate in [mask / rel] + [mask / rel.with_suffix(s) for s in sorted(IMAGE_SUFFIXES)]:
            if candidate.is_file():
                return candidate
        return mask / rel          # missing: reported as that image's error
    return mask


class _StageBar:
    """A second progress line for one image: encode tiles, denoising steps, decode tiles."""

    def __init__(self, name: str):
        self.name, self.bar, self.stage = name, None, None

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm
        if stage != self.stage:
            if self.bar is not None:
                self.bar.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=f"  {stage}", unit="step" if stage == "denoise"
                            else "tile", leave=False)
        self.bar.n = done
        self.bar.refresh()
        if done >= total:
            self.bar.close()
            self.bar, self.stage = None, None


def cmd_restore(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    import model
    from model.errors import ModelError
    from model.imageio import decode_image, decode_mask, save_image

    jobs = _collect_inputs(args.inputs)
    if not jobs:
        log.error("no input images found in %s", " ".join(args.inputs))
        return 2
    try:
        restorer = model.load(args.model, device=args.device)
    except ModelError as exc:
        log.error("cannot load model %s: %s", args.model, exc)
        return 2
    task = restorer.task
    if args.task and args.task != task:
        log.error("model %s does %r, not %r; pick a model for that task with --model",
                  args.model, task, args.task)
        return 2
    if restorer.needs_mask and args.mask is None:
        log.error("the %r model needs --mask (a mask file, or a folder of masks named like "
                  "the inputs; white = area to fill)", task)
        return 2
    from export.families import create_backend
    from export.errors import BackendUnavailable
    try:
        backend = create_backend(args.backend, restorer, model_dir=args.model, tile=args.tile,
                                 precision=args.precision, tf32=args.tf32)
    except BackendUnavailable as exc:
        log.error("backend %s: %s", args.backend, exc)
        return 2
    restorer = restorer.using(backend)
    print(f"backend: {backend.describe()}", flush=True)
    out = Path(args.output)
    single = len(jobs) == 1 and not Path(args.inputs[0]).is_dir()
    failures: list[tuple[Path, str]] = []
    bar = tqdm(jobs, desc="restore", unit="img", disable=args.quiet)
    for src, rel in bar:
        bar.set_postfix_str(str(rel)[-40:])
        try:
            decoded = decode_image(src, max_pixels=args.max_pixels)
            for note in decoded.notes:
                tqdm.write(f"{src}: {note}")
            mask = None
            mask_path = _find_mask(args.mask, rel)
            if restorer.needs_mask and mask_path is not None:
                h, w = decoded.pixels.shape[:2]
                mask = decode_mask(mask_path, (w, h), max_pixels=args.max_pixels)
            result = restorer.restore(decoded.pixels, mask=mask, seed=args.seed, tile=args.tile,
                                      progress=None if args.quiet else _StageBar(str(rel)))
            dest = _output_path(out, rel, single, args.format)
            save_image(result, dest)
        except ModelError as exc:
            failures.append((src, str(exc)))
            tqdm.write(f"FAILED {src}: {exc}")
    bar.close()
    done = len(jobs) - len(failures)
    print(f"restored {done} of {len(jobs)} image(s) into {out}")
    for src, why in failures:
        print(f"  failed: {src}: {why}", file=sys.stderr)
    return 1 if failures else 0


def cmd_import_diffir(args: argparse.Namespace) -> int:
    import model
    from model.errors import ModelError

    if args.config is None or args.weights is None:
        log.error("--family diffir needs --config (DiffIR's test YAML, or a YAML holding "
                  "its network_g section) and --weights (the .pth checkpoint)")
        return 2
    if args.preset or args.unet or args.autoencoder:
        log.error("--preset, --unet and --autoencoder are for ResShift models; a DiffIR "
                  "import takes --config and --weights")
        return 2
    try:
        restorer = model.import_diffir(args.config, args.weights)
    except ModelError as exc:
        log.error("%s", exc)
        return 2
    restorer.name = Path(args.output).name
    restorer.provenance["config_file"] = Path(args.config).name
    path = model.save(restorer, args.output)
    print(f"wrote {path} (DiffIR S2: task {restorer.task}, x{restorer.scale}, "
          f"{restorer.steps} IPR step(s))")
    return 0


def cmd_import_official(args: argparse.Namespace) -> int:
    import model
    from model.errors import ModelError

    if args.family == "diffir":
        return cmd_import_diffir(args)
    if args.unet is None or args.weights is not None:
        log.error("a ResShift import takes --unet (the UNet checkpoint, .pth) and "
                  "--autoencoder; --weights is for --family diffir")
        return 2
    spec = args.preset or args.config
    if spec is None:
        log.error("give --preset NAME or --config official.yaml")
        return 2
    try:
        restorer = model.import_official(spec, args.unet, args.autoencoder)
    except ModelError as exc:
        log.error("%s", exc)
        return 2
    path = model.save(restorer, args.output)
    cfg = restorer.config
    print(f"wrote {path} ({cfg.name}: task {cfg.task}, x{cfg.scale}, {cfg.steps} step(s))")
    return 0


def _missing_models(models: dict) -> list[str]:
    """One line per served task whose model directory has no model.json."""
    from model.directory import MODEL_JSON, resolve_model_dir

    missing = []
    for task, path in models.items():
        directory = resolve_model_dir(path)
        if not (directory / MODEL_JSON).is_file():
            what = " (the bundled demo model is not built yet)" if str(path) == "demo" else ""
            missing.append(f"task {task!r}: no {MODEL_JSON} in {directory}{what}")
    return missing


def cmd_serve(args: argparse.Namespace) -> int:
    # The service is imported here only: the other commands must not need FastAPI.
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        settings = Settings(**({"role": args.role} if args.role else {}))
    except ValidationError as exc:
        log.error("invalid RESSHIFT_* settings:\n%s", exc)
        return 2
    # the api role loads no model: workers announce theirs through Redis
    missing = _missing_models(settings.models) if settings.role != "api" else []
    if missing:
        log.error("cannot serve: %s.\nSet RESSHIFT_MODELS to task=model_dir pairs, e.g.\n"
                  "  RESSHIFT_MODELS=sr=models/realsr_v3,inpaint=models/inpaint_imagenet "
                  "resshift serve\n(model directories come from `resshift import-official`)",
                  "; ".join(missing))
        return 2
    import uvicorn

    from service.app import create_app
    if settings.role == "api":
        log.info("API on http://%s:%d, jobs go to Redis (%s)", args.host, args.port,
                 settings.redis_prefix)
    else:
        log.info("%s %s on http://%s:%d (devices %s)",
                 "serving" if settings.role == "all" else "worker for",
                 ", ".join(f"{t}={p}" for t, p in settings.models.items()), args.host,
                 args.port, ",".join(settings.devices))
    uvicorn.run(create_app(settings), host=args.host, port=args.port,
                log_level="debug" if args.verbose else "info",
                timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None)
    return 0


def add_serve_parser(sub) -> None:
    v = sub.add_parser("serve", help="run the HTTP service (settings from RESSHIFT_* variables)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  resshift serve\n"
                              "  RESSHIFT_MODELS=sr=models/realsr_v3 resshift serve --port 8080\n"
                              "  RESSHIFT_MODELS=sr=models/realsr_v3,inpaint=models/inpaint "
                              "RESSHIFT_DEVICES=cuda:0 \\\n      resshift serve --host 0.0.0.0\n"
                              "  RESSHIFT_REDIS_URL=redis://redis:6379/0 resshift serve --role api\n"
                              "  RESSHIFT_REDIS_URL=redis://redis:6379/0 RESSHIFT_DEVICES=cuda:0 "
                              "resshift serve --role worker --port 8001\n"
                              "settings: docs/service.md (RESSHIFT_MAX_BATCH, RESSHIFT_API_KEYS...)")
    v.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    v.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    v.add_argument("--role", choices=["all", "api", "worker"], default=None,
                   help="all (default, or RESSHIFT_ROLE): HTTP and workers in one process. "
                        "With RESSHIFT_REDIS_URL: api validates requests and queues them on "
                        "Redis; worker runs them on its devices (its HTTP serves only "
                        "/healthz, /readyz, /metrics). See docs/deploy.md")
    v.set_defaults(func=cmd_serve)


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from model.directory import BUNDLED
    from model.errors import ModelError

    if args.out is None and str(args.model_dir) in BUNDLED:
        log.error("the bundled %r model lives inside the package; give --out DIR for its "
                  "graphs", args.model_dir)
        return 2
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        log.error("ONNX export needs onnx and onnxruntime (%s); install them with "
                  "pip install 'resshift-service[onnx]'", exc)
        return 2
    from export.fp16 import GraphPrecisions
    from export.onnx import default_out_dir
    from export.families import export_model_dir

    try:
        precisions = GraphPrecisions.parse(args.precision)
    except ValueError as exc:
        log.error("--precision: %s", exc)
        return 2
    out = args.out or default_out_dir(args.model_dir)
    tiles = args.tile or [64]

    def report(done: int, total: int, rec: dict) -> None:
        shape = "x".join(str(d) for d in rec["inputs"][0]["shape"])
        found = rec.get("measures") or {}
        measured = ", ".join(
            f"PSNR {v} dB" if k == "psnr_db" else f"code flips {100 * float(v):.2f} %"
            for k, v in found.items())
        measured += (", " if measured else "") + f"rel. error {rec['rel_err']:.1e}"
        print(f"[{done}/{total}] {rec['file']}: "
              f"{rec['inputs'][0]['name']} {shape}, onnxruntime vs torch {measured} "
              f"(export {rec['export_s']:.1f} s, check {rec['check_s']:.1f} s)", flush=True)
    print(f"exporting {args.model_dir} to {out} (opset {args.opset}, tiles "
          f"{', '.join(map(str, tiles))}, precision {precisions})", flush=True)
    try:
        result = export_model_dir(args.model_dir, out, tiles=tiles, opset=args.opset,
                                  progress=report, precisions=precisions)
    except ModelError as exc:
        log.error("%s", exc)
        return 2
    print(f"wrote {len(result.paths)} graph(s) and manifest.json to {result.directory}")
    return 0


def cmd_export_tensorrt(args: argparse.Namespace) -> int:
    """Profiles -> checked ONNX graphs -> TensorRT engines (built, or found in the
    engine folder), one progress line per engine, then their paths. Without a TensorRT
    module, or without a GPU and a TensorRT-RTX target, it stops after the ONNX graphs
    and says what is missing."""
    import model
    from export.errors import BackendUnavailable
    from export.families import family_backends
    from export.tensorrt import build_engines, profiles_for
    from model.errors import ModelError

    precision = "fp16" if args.fp16 else args.precision
    try:
        restorer = model.load(args.model_dir, device="cpu")   # graphs trace on the CPU
        if "tensorrt" not in family_backends(restorer).names:
            log.error("TensorRT engines are built for ResShift models; %s is a %s model "
                      "(use --backend onnxruntime)", args.model_dir, restorer.family)
            return 2
        profiles = profiles_for(restorer, args.tile, args.max_batch, precision)
        print(f"{args.model_dir}: {len(profiles)} engine profile(s): "
              + ", ".join(p.tag() for p in profiles), flush=True)
        paths = build_engines(restorer, args.model_dir, tile=args.tile,
                              max_batch=args.max_batch, precision=precision,
                              compute_capability=args.compute_capability,
                              progress=lambda line: print(line, flush=True))
    except (BackendUnavailable, ModelError) as exc:
        log.error("%s", exc)
        return 2
    for path in paths:
        print(path)
    return 0


def add_export_parser(sub) -> None:
    e = sub.add_parser("export", help="export a model directory (ONNX graphs)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  resshift export onnx models/realsr_v3\n"
                              "  resshift export onnx models/realsr_v3 --tile 64 128\n"
                              "  resshift export onnx demo --out /tmp/demo-onnx")
    kinds = e.add_subparsers(dest="export_kind", required=True)
    o = kinds.add_parser(
        "onnx", help="ONNX graphs (UNet per tile size, VQGAN encoder and decoder), each "
                     "checked against torch with onnxruntime",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Writes MODEL_DIR/onnx/ (or --out): unet_t<N>.onnx per latent tile size N\n"
               "(dynamic batch), vae_encoder.onnx and vae_decoder.onnx for latent models\n"
               "(dynamic batch and size), and manifest.json. Each graph is checked against\n"
               "the float32 torch model (decoder: image PSNR, encoder: latent PSNR and\n"
               "codebook flips, UNet: x0 PSNR; limits in export/fidelity.py) or the\n"
               "export fails. --precision fp16 adds float16 twins (unet_t64.fp16.onnx...).\n\n"
               "examples:\n  resshift export onnx models/realsr_v3\n"
               "  resshift export onnx models/realsr_v3 --tile 64 128 --opset 18\n"
               "  resshift export onnx models/realsr_v3 --precision fp16\n"
               "  resshift export onnx demo --out /tmp/demo-onnx")
    o.add_argument("model_dir", help="model directory (or a bundled name such as demo)")
    o.add_argument("--tile", type=int, nargs="+", action="extend", default=None, metavar="N",
                   help="ResShift: latent tile side(s) to export a UNet graph for, multiples "
                        "of the model's window unit (default 64); DiffIR: the one LQ size "
                        "the dynamic graph is traced and checked at")
    o.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 to 20 (default 17)")
    o.add_argument("--out", help="output folder (default MODEL_DIR/onnx)")
    o.add_argument("--precision", default="fp32", metavar="P",
                   help="fp32 (default), fp16 (also write float16 graphs: fp16 weights and "
                        "compute, float32 inputs/outputs, norms/softmax/timestep embedding/"
                        "codebook lookup in float32), or per graph, e.g. "
                        "unet=fp16,encoder=fp16,decoder=fp32")
    o.set_defaults(func=cmd_export_onnx)
    t = kinds.add_parser(
        "tensorrt", help="TensorRT engines from the checked ONNX graphs (tensorrt 10/11 "
                         "on a CUDA GPU, or TensorRT-RTX, which also builds without one)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exports and checks the ONNX graphs the profiles need (fp16 graphs for\n"
               "--precision fp16), then builds one strongly typed engine per profile into\n"
               "MODEL_DIR/tensorrt/ (the UNet at the latent tile; the VQGAN encoder and\n"
               "decoder from one latent unit up to one VAE tile; batch 1 to --max-batch),\n"
               "keyed by weights, graph, TensorRT module and version, compute capability\n"
               "and profile; engines already there are reused. The module is tensorrt when\n"
               "it imports, else tensorrt_rtx (RESSHIFT_TENSORRT_MODULE forces one).\n"
               "Without a GPU or TensorRT it stops after the graphs and names what is\n"
               "missing.\n\n"
               "examples:\n  resshift export tensorrt models/realsr_v3 --max-batch 8\n"
               "  resshift export tensorrt models/realsr_v3 --tile 64 --precision fp32\n"
               "  resshift export tensorrt models/realsr_v3 --compute-capability 8.9  "
               "# TensorRT-RTX, no GPU")
    t.add_argument("model_dir", help="model directory")
    t.add_argument("--precision", choices=["fp16", "fp32"], default="fp16",
                   help="engine precision (default fp16: the fp16 ONNX graph, which keeps "
                        "norms, softmax, the timestep embedding and the codebook lookup "
                        "in fp32)")
    t.add_argument("--fp16", action="store_true", help=argparse.SUPPRESS)  # older spelling
    t.add_argument("--max-batch", type=int, default=None, metavar="N",
                   help="largest batch of the profiles (default: the service's max_batch, 8)")
    t.add_argument("--tile", type=int, default=None, metavar="N",
                   help="latent tile side (default: the model's, 64)")
    t.add_argument("--compute-capability", default=None, metavar="X.Y",
                   help="TensorRT-RTX build target, e.g. 8.6 (default: the visible GPU's)")
    t.set_defaults(func=cmd_export_tensorrt)


def cmd_bench(args: argparse.Namespace) -> int:
    import json
    import platform
    import time

    import torch

    from export.backends import cpu_flags, resolve_precision
    from export.cpu_probe import bf16_speedup
    from export.bench import (CONFIGS, RANDOM_MODEL, load_restorer, markdown, rows_json,
                              run_bench, svg_plot)
    from export.errors import BackendUnavailable
    from model.errors import ModelError
    from model.restorer import Restorer

    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = [c for c in args.config if c not in CONFIGS]
    if unknown:
        log.error("unknown config(s) %s; use %s", ", ".join(unknown), ", ".join(CONFIGS))
        return 2
    try:
        restorer = load_restorer(args.model, device=args.device)
    except ModelError as exc:
        log.error("cannot load model %s: %s", args.model, exc)
        return 2
    if not isinstance(restorer, Restorer):      # the stages it times are ResShift's
        log.error("resshift bench times ResShift models; %s is a %s model", args.model,
                  restorer.family)
        return 2

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
    progress(f"bench {args.model}: configs {', '.join(args.config)}, batch "
             f"{', '.join(map(str, args.batch))}, tile {', '.join(map(str, args.tile))}, "
             f"{torch.get_num_threads()} thread(s), best of {args.repeat}")
    model_dir = None if args.model == RANDOM_MODEL else args.model
    try:
        rows = run_bench(restorer, args.config, args.batch, args.tile, args.repeat,
                         model_dir=model_dir, progress=progress)
    except (BackendUnavailable, ModelError) as exc:
        log.error("%s", exc)
        return 2
    print(markdown(rows))
    flags = sorted(cpu_flags() & {"amx_bf16", "avx512_bf16", "amx_tile", "avx512f"})
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model,
              "device": args.device, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "cpu_flags": flags,
              "precision_auto": resolve_precision("auto", restorer.device)[0],
              "bf16_speedup": (round(bf16_speedup(), 3) if restorer.device.type == "cpu"
                               else None),
              "repeat": args.repeat, "rows": rows_json(rows)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        progress(f"wrote {args.json}")
    if args.plot:
        svg_plot(rows, Path(args.plot))
        progress(f"wrote {args.plot}")
    return 0


def add_bench_parser(sub) -> None:
    from export.bench import CONFIGS
    b = sub.add_parser(
        "bench", help="latency and throughput per backend, batch size and tile size",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Times, best of --repeat, end to end (encode + sampler steps + decode, one\n"
               "untiled batch; tile 64 is 64 -> 256 for the x4 models) and one UNet call,\n"
               "per config:\n  " + "\n  ".join(
                   f"{k}: backend {b}, precision {p}" for k, (b, p) in CONFIGS.items()) +
               "\nA markdown table goes to stdout, progress to stderr.\n\n"
               "examples:\n  resshift bench\n"
               "  resshift bench --model models/realsr_v3 --batch 1 4 --json b.json "
               "--plot b.svg\n"
               "  resshift bench --config torch-fp32 auto --threads 2 --repeat 3")
    b.add_argument("--model", default="realsr_v3-random",
                   help="model directory, bundled name, or realsr_v3-random (the full-size "
                        "realsr_v3 architecture with random weights; default)")
    b.add_argument("--config", nargs="+", default=["torch-fp32", "torch-bf16", "onnxruntime",
                                                   "auto"],
                   help=f"configurations to time (of {', '.join(CONFIGS)})")
    b.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes (default 1)")
    b.add_argument("--tile", type=int, nargs="+", default=[64],
                   help="latent tile sides, multiples of 64 (default 64)")
    b.add_argument("--repeat", type=int, default=1, help="runs per point, best kept")
    b.add_argument("--threads", type=int, default=None, help="torch/onnxruntime threads")
    b.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    b.add_argument("--json", help="write the results as JSON here")
    b.add_argument("--plot", help="write an SVG plot of latency vs batch size here")
    b.set_defaults(func=cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    from model.presets import PRESET_NAMES

    parser = argparse.ArgumentParser(
        prog="resshift", description="Diffusion image restoration with ResShift.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("restore", help="restore image files or folders",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  resshift restore in.png -o out.png\n"
                              "  resshift restore photos/ -o restored/ --model models/realsr_v3\n"
                              "  resshift restore masked.png --mask mask.png -o filled.png "
                              "--model models/inpaint_imagenet")
    r.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    r.add_argument("-o", "--output", required=True,
                   help="output file (one input) or folder (names are kept)")
    r.add_argument("--model", default="demo", help="model directory (default: bundled demo)")
    r.add_argument("--task", help="expected task (sr, inpaint, face); checked against the model")
    r.add_argument("--mask", help="mask file or folder of masks (inpainting; white = fill)")
    r.add_argument("--seed", type=int, default=None, help="noise seed (default: random)")
    r.add_argument("--tile", type=int, default=None,
                   help="ResShift: latent tile side, a multiple of 64 (default 64; 0 = never "
                        "tile); DiffIR: tile side in LQ pixels (default: whole up to 256x256 "
                        "LQ, 256-pixel tiles beyond; 0 = always whole)")
    r.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    r.add_argument("--backend", choices=["auto", "torch", "onnxruntime", "tensorrt"],
                   default="auto",
                   help="where the networks run (default auto: the fastest usable one, "
                        "named in the log: tensorrt, else onnxruntime, with the decoder "
                        "on torch bf16 under --precision bf16; onnxruntime exports "
                        "MODEL_DIR/onnx on first use, or ~/.cache/resshift for "
                        "bundled/read-only models)")
    r.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="precision of the torch-run networks (default auto: fp16 autocast "
                        "on CUDA, bf16 on CPUs with AMX-BF16 / AVX512-BF16 where a bf16 "
                        "convolution measures faster, fp32 otherwise; "
                        "bf16 keeps what precedes the codebook lookup in fp32; the choice "
                        "is logged)")
    r.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=False,
                   help="TF32 tensor-core math for float32 work on CUDA (default off: fp32 "
                        "means IEEE float32; use --precision fp16 for speed)")
    r.add_argument("--format", choices=["png", "jpg", "webp"], help="output format for folders")
    r.add_argument("--max-pixels", type=int, default=16_000_000, help="refuse larger inputs")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_restore)

    i = sub.add_parser("import-official", help="turn official .pth checkpoints into a model dir",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  resshift import-official --preset realsr_v3 "
                              "--unet resshift_realsrx4_s4_v3.pth \\\n"
                              "      --autoencoder autoencoder_vq_f4.pth -o models/realsr_v3\n"
                              "  resshift import-official --family diffir --config "
                              "test_DiffIRS2_x4.yml \\\n"
                              "      --weights net_g_latest.pth -o models/diffir_x4")
    i.add_argument("--family", choices=["resshift", "diffir"], default="resshift",
                   help="model family (default resshift); diffir: a DiffIR S2 checkpoint")
    src = i.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=PRESET_NAMES, help="a released checkpoint's preset")
    src.add_argument("--config", help="official YAML of a model trained with the official "
                                      "code (diffir: the test YAML with network_g, or a "
                                      "YAML holding just network_g)")
    i.add_argument("--unet", help="UNet checkpoint (.pth; resshift, required)")
    i.add_argument("--autoencoder", help="autoencoder checkpoint (.pth; resshift)")
    i.add_argument("--weights", help="DiffIR S2 checkpoint (.pth, weights under params_ema "
                                     "or params; diffir, required)")
    i.add_argument("-o", "--output", required=True, help="model directory to write")
    i.set_defaults(func=cmd_import_official)
    add_serve_parser(sub)
    add_export_parser(sub)
    add_bench_parser(sub)

    from model.training.cli import add_eval_parser, add_train_parser
    add_train_parser(sub)
    add_eval_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)

