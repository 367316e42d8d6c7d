"""``resshift train`` and ``resshift eval``: their parsers and command functions.

Kept here (not in ``resshift/cli.py``) so the training side stays in one package;
``resshift.cli.build_parser`` only calls ``add_train_parser`` / ``add_eval_parser``.
Heavy imports (torch, the networks) happen inside the commands.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("resshift")

TRAIN_EPILOG = """examples:
  resshift train configs/demo.yaml                    # the first demo's recipe (bicubic pairs)
  resshift train my.yaml --resume auto                # continue from the latest checkpoint
  resshift train my.yaml --lpips-weights vgg16.pth,lpips_vgg.pth
  torchrun --nproc_per_node 8 -m resshift train my.yaml --device cuda   # multi-GPU (DDP)
"""

EVAL_EPILOG = """examples:
  resshift eval --gt photos/gt --degradation resshift_test --seed 0
  resshift eval --lq pairs/lq --gt pairs/gt --json out.json
  resshift eval --model models/realsr_v3 --lq lq/ --gt gt/ --save-dir restored/
degradations: realesrgan, realesrgan_basicsr, resshift_test, bicubic, face, face_test, blur
"""


def add_train_parser(sub) -> None:
    t = sub.add_parser("train", help="train a model from a YAML recipe (Algorithm 1)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=TRAIN_EPILOG)
    t.add_argument("config", help="training recipe (YAML), e.g. configs/demo.yaml")
    t.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue a run: a checkpoint path, or no value / 'auto' for the latest "
                        "in the work dir")
    t.add_argument("--lpips-weights", help="VGG16 + LPIPS linear weights (comma-separated "
                   "files) to add the LPIPS loss; without them the loss is L2 only")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    t.add_argument("--steps", type=int, help="override train.steps")
    t.add_argument("--output", help="override the model directory to write")
    t.add_argument("--work-dir", help="override the folder for checkpoints and logs")
    t.add_argument("--stop-after", type=int, help="stop (with a checkpoint) after this many "
                   "steps in this run; continue later with --resume")
    t.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this "
                   "much wall time; continue later with --resume")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from model.errors import ModelError
    from model.training.config import load_train_config
    from model.training.trainer import Trainer

    try:
        cfg = load_train_config(args.config)
        if args.steps is not None:    # `is not None`: a 0 must be checked, not ignored
            cfg.train.steps = args.steps
        if args.output:
            cfg.output = args.output
        if args.work_dir:
            cfg.work_dir = args.work_dir
        cfg.validate()                  # the overrides pass the recipe's own checks
        trainer = Trainer(cfg, device=args.device, resume=args.resume,
                          lpips_weights=args.lpips_weights, stop_after=args.stop_after,
                          max_minutes=args.max_minutes, show_progress=not args.quiet)
        path = trainer.run()
    except ModelError as exc:
        log.error("%s", exc)
        return 2
    if path is not None:
        print(f"wrote {path} ({trainer.step} steps, {trainer.elapsed:.0f} s of training)")
    return 0


def add_eval_parser(sub) -> None:
    e = sub.add_parser("eval", help="PSNR/SSIM of a model and of bicubic on (LQ, GT) pairs",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EVAL_EPILOG)
    e.add_argument("--model", default="demo", help="model directory (default: bundled demo)")
    e.add_argument("--gt", required=True, help="folder of ground-truth images")
    src = e.add_mutually_exclusive_group()
    src.add_argument("--lq", help="folder of LQ inputs, named like the GT images")
    src.add_argument("--degradation", help="degrade the GT on the fly with this named "
                     "degradation (default: the model's training degradation)")
    e.add_argument("--seed", type=int, default=0, help="degradation and sampler seed (default 0)")
    e.add_argument("--crop-border", type=int, help="pixels dropped at each side (default: scale)")
    e.add_argument("--tile", type=int, default=0, help="latent tile (default 0: untiled)")
    e.add_argument("--limit", type=int, help="use only the first N images")
    e.add_argument("--json", help="write the report as JSON here")
    e.add_argument("--save-dir", help="write restored, bicubic and LQ images here")
    e.add_argument("--record", action="store_true", help="also store the mean numbers in "
                   "the model directory's model.json (metrics.eval)")
    e.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    e.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from model.errors import ModelError
    from model.directory import load
    from model.training.evaluate import evaluate, pairs_by_degradation, pairs_from_folders

    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        restorer = load(args.model, device=args.device)
        scale = restorer.scale
        if args.lq:
            pairs = pairs_from_folders(Path(args.lq), Path(args.gt), scale, args.limit)
            setting = {"pairs": "folders", "lq": args.lq, "gt": args.gt}
        else:
            from model.degradations import get_degradation
            name = args.degradation or (restorer.config.provenance.get("data") or {}).get(
                "degradation")
            if not name:
                log.error("this model records no training degradation: give --degradation "
                          "NAME or --lq DIR")
                return 2
            degradation = get_degradation(name)
            if degradation.scale != scale:
                log.error("degradation %s is x%d but the model is x%d", name, degradation.scale,
                          scale)
                return 2
            pairs = pairs_by_degradation(Path(args.gt), degradation, args.seed, args.limit)
            setting = {"pairs": "degraded", "gt": args.gt, "degradation": name}
        setting.update(seed=args.seed, tile=args.tile)
        bar = tqdm(total=len(pairs), desc="eval", unit="img", disable=args.quiet)
        report = evaluate(lambda lq, seed: restorer.restore(lq, seed=seed, tile=args.tile),
                          pairs, scale, seed=args.seed, crop_border=args.crop_border,
                          model_name=str(args.model), setting=setting,
                          save_dir=Path(args.save_dir) if args.save_dir else None,
                          progress=lambda i, n, name: bar.update(1))
        bar.close()
    except (ModelError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    print(report.table())
    if args.json:
        report.write_json(Path(args.json))
        print(f"wrote {args.json}")
    if args.record:
        from model.training.evaluate import record_in_model_dir
        try:
            print(f"recorded in {record_in_model_dir(args.model, report)}")
        except OSError as exc:
            log.error("cannot record in the model's model.json (%s); the numbers are in "
                      "the table above%s", exc, " and in --json" if args.json else "")
            return 2
    return 0
