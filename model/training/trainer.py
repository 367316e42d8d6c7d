"""The training loop: ``Trainer(config).run()`` is what ``resshift train`` calls.

One optimizer step = ``grad_accum`` micro-batches of ``batch_size`` pairs per rank, each
scored with Algorithm 1 (``loss.py``). Around it: LR warm-up + cosine (``optim.py``),
EMA weights (``ema.py``), AMP on CUDA, DDP under torchrun (``distributed.py``),
checkpoints with exact resume (``checkpoint.py``), validation PSNR/SSIM of the EMA
weights (``evaluate.py``), a tqdm bar and a JSONL loss log (``<work_dir>/log.jsonl``).
At the end the EMA weights are written as a model directory with their provenance.
"""

from __future__ import annotations

import json
import logging
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..degradations import get_degradation
from ..directory import save
from ..errors import ConfigError
from ..restorer import Restorer
from . import distributed as dist
from .build import build_training_model
from .checkpoint import (checkpoint_path, latest_checkpoint, load_checkpoint, rng_state,
                         save_checkpoint, set_rng_state)
from .config import LOSS_NAMES, TrainConfig
from .data import ImagePool, PairSampler, PairSettings
from .ema import EMA
from .evaluate import EvalPair, degrade_pair, evaluate
from .loss import chain_loss, diffusion_loss, make_targets
from .optim import lr_at, make_optimizer, set_lr

log = logging.getLogger("resshift.train")


def _seed_int(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class Trainer:
    """Train one recipe. ``resume``: None (fresh; refuses to overwrite checkpoints),
    "auto" (latest checkpoint in work_dir, if any) or a checkpoint path.
    ``stop_after``: stop (with a checkpoint) once this many steps ran in this process;
    ``max_minutes``: the same by wall time. Both leave the run resumable."""

    def __init__(self, cfg: TrainConfig, device: str = "cpu", resume: Optional[str] = None,
                 lpips_weights: Optional[str] = None, stop_after: Optional[int] = None,
                 max_minutes: Optional[float] = None, show_progress: bool = True):
        self.cfg = cfg
        self.work_dir = Path(cfg.work_dir)
        self.resume, self.stop_after, self.max_minutes = resume, stop_after, max_minutes
        self.show_progress = show_progress
        self.lpips_weights = lpips_weights
        if cfg.train.threads:
            torch.set_num_threads(int(cfg.train.threads))
        self.dist, self.device = dist.setup(device)
        self.main = self.dist.is_main

        self.model_config, unet, autoencoder = build_training_model(cfg.model, cfg.name, cfg.seed)
        self.unet = unet.to(self.device)
        self.ema = EMA(self.unet, cfg.train.ema_decay)
        # the Restorer over the EMA weights: targets (encode), validation, the model dir
        self.restorer = Restorer(self.model_config, self.ema.shadow, autoencoder, self.device)
        self.model = dist.wrap(self.unet, self.dist, self.device)
        t = cfg.train
        self.optimizer = make_optimizer(self.unet, t.lr, t.weight_decay, t.betas)
        self.use_amp = t.amp == "on" or (t.amp == "auto" and self.device.type == "cuda")
        if self.use_amp and self.device.type != "cuda":
            log.warning("AMP needs CUDA; training in float32 on %s", self.device)
            self.use_amp = False
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

        degradation = get_degradation(cfg.data.degradation)
        if degradation.scale != self.restorer.scale:
            raise ConfigError(f"degradation {degradation.name!r} is x{degradation.scale} but the "
                              f"model is x{self.restorer.scale}")
        self.degradation = degradation
        self.pool = ImagePool(cfg.data.train, cfg.data.gt_size, cfg.data.small_images)
        self.sampler = PairSampler(self.pool, PairSettings(
            cfg.data.gt_size, degradation, tuple(cfg.data.rescale_range), cfg.data.hflip,
            cfg.data.rot90),
            t.batch_size, cfg.seed)
        self.val_pairs = self._val_pairs() if self.main else []
        self.lpips = self._lpips()
        self.step = 0
        self.elapsed = 0.0
        self.history: list[dict] = []

    # -- set-up pieces ------------------------------------------------------------------
    def _lpips(self):
        weight = self.cfg.train.lpips_weight
        fit = LOSS_NAMES[self.cfg.train.loss]
        if not self.lpips_weights:
            if self.main:
                log.info("LPIPS off: no --lpips-weights given, so the loss is %s only "
                         "(LPIPS needs VGG16 weights this program cannot download)", fit)
            return None
        from .lpips import load_lpips
        net = load_lpips(self.lpips_weights).to(self.device)
        if self.main:
            log.info("loss: %s + %g * LPIPS (weights from %s)", fit, weight, self.lpips_weights)
        return net

    def _val_pairs(self) -> list[EvalPair]:
        d = self.cfg.data
        if not d.val or d.val_images <= 0:
            return []
        pool = ImagePool(d.val, d.gt_size, "pad")
        pairs = []
        sf = self.degradation.scale
        for i in range(min(d.val_images, len(pool))):
            img = pool.image(i)
            side = min(d.val_size, img.shape[0], img.shape[1]) // sf * sf
            top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
            gt = np.round(img[top:top + side, left:left + side] * 255).astype(np.uint8)
            pairs.append(degrade_pair(f"val{i}", gt, self.degradation, self.cfg.seed))
        return pairs

    # -- checkpoints --------------------------------------------------------------------
    def state(self) -> dict:
        return {"step": self.step, "elapsed": self.elapsed, "config": self.cfg.to_dict(),
                "unet": self.unet.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng_state(), "history": self.history}

    def save_checkpoint(self) -> Optional[Path]:
        path = None
        if self.main:
            single = self.cfg.train.checkpoint_file
            if single:    # one file replaced in place (a run resumed from a repository)
                path = save_checkpoint(self.state(), Path(single), keep=0)
            else:
                path = save_checkpoint(self.state(), checkpoint_path(self.work_dir, self.step),
                                       self.cfg.train.keep_checkpoints)
        dist.barrier(self.dist)
        return path

    def _latest(self) -> Optional[Path]:
        single = self.cfg.train.checkpoint_file
        if single:
            return Path(single) if Path(single).is_file() else None
        return latest_checkpoint(self.work_dir)

    def _restore(self) -> None:
        if self.resume is None:
            if self._latest() is not None:
                raise ConfigError(f"{self.work_dir} already holds checkpoints: pass --resume to "
                                  "continue that run, or choose another work_dir")
            return
        path = self._latest() if self.resume == "auto" else Path(self.resume)
        if path is None:
            log.info("no checkpoint in %s: starting from step 0", self.work_dir)
            return
        state = load_checkpoint(path)
        if "optimizer" not in state:
            raise ConfigError(f"{path} holds the weights of a finished stage only (step "
                              f"{state.get('step')}), not a run to resume: start the next "
                              "stage from it with model.init_from")
        old, new = state.get("config", {}), self.cfg.to_dict()
        if old.get("model") != new["model"]:
            raise ConfigError(f"{path} was trained with another model section; resume it "
                              "with its own recipe")
        self.unet.load_state_dict(state["unet"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self.history = list(state.get("history", []))
        self._truncate_log()
        if self.main:
            log.info("resumed from %s at step %d", path, self.step)

    # -- logging ------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.work_dir / "log.jsonl"

    def _write_log(self, record: dict) -> None:
        if not self.main:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def _truncate_log(self) -> None:
        """Drop log lines past the resumed step (they belong to the lost future)."""
        if not self.main or not self.log_path.is_file():
            return
        keep = [line for line in self.log_path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= self.step]
        self.log_path.write_text("".join(line + "\n" for line in keep))

    # -- one step -------------------------------------------------------------------------
    def train_step(self) -> dict:
        t = self.cfg.train
        lr = lr_at(self.step, t.lr, t.min_lr, t.warmup_steps, t.steps)
        set_lr(self.optimizer, lr)
        self.model.train()
        mse_sum, lp_sum = 0.0, 0.0
        steps_t = self.restorer.schedule.num_steps
        for micro in range(t.grad_accum):
            gt, lq = self.sampler.batch(self.step, micro, self.dist.rank)
            gt, lq = gt.to(self.device), lq.to(self.device)
            targets = make_targets(self.restorer, gt, lq)
            gen = torch.Generator().manual_seed(
                _seed_int(self.cfg.seed, self.step, micro, self.dist.rank, 7))
            ts = torch.randint(0, steps_t, (gt.shape[0],), generator=gen).to(self.device)
            noise = torch.randn(targets.x0.shape, generator=gen).to(self.device)
            with dist.no_sync(self.model, micro < t.grad_accum - 1), \
                    torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
                if t.objective == "chain":
                    noises = [noise] + [torch.randn(targets.x0.shape, generator=gen)
                                        .to(self.device) for _ in range(steps_t)]
                    out = chain_loss(self.model, self.restorer, targets, noises, gt,
                                     self.lpips, t.lpips_weight,
                                     relative=t.loss == "relative_l2")
                else:
                    out = diffusion_loss(self.model, self.restorer, targets, ts, noise, gt,
                                         self.lpips, t.lpips_weight,
                                         relative=t.loss == "relative_l2")
            self.scaler.scale(out.loss / t.grad_accum).backward()
            mse_sum += out.mse
            lp_sum += out.lpips or 0.0
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.unet.parameters(), t.grad_clip if t.grad_clip else float("inf"))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.unet, self.step)
        self.step += 1
        record = {"step": self.step, "loss": dist.all_mean(mse_sum / t.grad_accum, self.dist,
                                                           self.device),
                  "lr": lr, "grad_norm": float(grad_norm)}
        if self.lpips is not None:
            record["lpips"] = lp_sum / t.grad_accum
        return record

    # -- validation -----------------------------------------------------------------------
    def validate(self) -> Optional[dict]:
        if not self.main or not self.val_pairs:
            return None
        sf = self.restorer.scale
        report = evaluate(lambda lq, seed: self.restorer.restore(lq, seed=seed, tile=0),
                          self.val_pairs, sf, seed=self.cfg.seed)
        result = {"model": report.mean("model"), "bicubic": report.mean("bicubic"),
                  "images": len(report.rows)}
        self._write_log({"step": self.step, "val": result})
        return result

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> Optional[Path]:
        """Train to ``train.steps``; returns the model directory written (rank 0), or
        None when stopped early (a checkpoint is left to resume from)."""
        self._restore()
        t = self.cfg.train
        if self.main:
            s = self.pool.stats
            log.info("data: %d images used of %d found (%d padded, %d skipped as smaller "
                     "than %d px, %d unreadable); degradation %s", s.used, s.found, s.padded,
                     s.skipped_small, self.cfg.data.gt_size, s.unreadable, self.degradation.name)
        from tqdm import tqdm
        bar = tqdm(total=t.steps, initial=self.step, desc="train", unit="step",
                   disable=not (self.main and self.show_progress), dynamic_ncols=True)
        began, ran = time.monotonic(), 0
        last_val: Optional[dict] = None
        while self.step < t.steps:
            tick = time.monotonic()
            record = self.train_step()
            ran += 1
            self.elapsed += time.monotonic() - tick
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
            if self.step % t.log_every == 0 or self.step == t.steps:
                record["elapsed_s"] = round(self.elapsed, 2)
                self._write_log(record)
            if t.val_every and self.step % t.val_every == 0 and self.step < t.steps:
                last_val = self.validate() or last_val
                if last_val:
                    line = (f"step {self.step}: val PSNR {last_val['model']['psnr']:.2f} dB "
                            f"(bicubic {last_val['bicubic']['psnr']:.2f})")
                    bar.write(line) if self.show_progress else log.info("%s", line)
            if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                self.save_checkpoint()
            out_of_time = (self.max_minutes is not None
                           and time.monotonic() - began > 60 * self.max_minutes)
            if self.step < t.steps and ((self.stop_after and ran >= self.stop_after) or out_of_time):
                self.save_checkpoint()
                bar.close()
                if self.main:
                    log.info("stopped at step %d of %d; continue with --resume", self.step, t.steps)
                return None
        bar.close()
        final_val = self.validate()
        self.save_checkpoint()
        path = self.write_model(final_val) if self.main else None
        dist.barrier(self.dist)
        dist.teardown(self.dist)
        return path

    def write_model(self, val: Optional[dict]) -> Path:
        cfg, t = self.cfg, self.cfg.train
        mc = self.model_config
        mc.provenance.update({
            "source": "resshift train",
            "command": "resshift " + " ".join(shlex.quote(a) for a in sys.argv[1:])
            if Path(sys.argv[0]).name == "resshift" else None,
            "recipe": cfg.source_path,
            "config": cfg.to_dict(),
            "data": {"train": self.pool.provenance(), "train_stats": self.pool.stats.as_dict(),
                     "val": ImagePool(cfg.data.val, cfg.data.gt_size).provenance()
                     if cfg.data.val else [],
                     "degradation": self.degradation.name, "gt_size": cfg.data.gt_size},
            "steps": self.step,
            "samples_seen": self.step * t.batch_size * t.grad_accum * self.dist.world_size,
            "wall_time_s": round(self.elapsed, 1),
            "loss": LOSS_NAMES[t.loss]
            + (" + %g LPIPS" % t.lpips_weight if self.lpips is not None else "")
            + (" on the sampled chain's output" if t.objective == "chain" else ""),
            "weights": f"EMA (decay {t.ema_decay})",
            "hardware": {"device": str(self.device), "ranks": self.dist.world_size,
                         "threads": torch.get_num_threads(), "cpu": platform.processor() or
                         platform.machine()},
            "torch": torch.__version__,
            "space": "latent" if mc.latent else "pixel",
        })
        if val:
            mc.metrics["validation"] = {"images": val["images"], "degradation":
                                        self.degradation.name, "seed": cfg.seed,
                                        "model": val["model"], "bicubic": val["bicubic"]}
        path = save(self.restorer, cfg.output)
        log.info("wrote %s (EMA weights, %d steps, %.0f s)", path, self.step, self.elapsed)
        return path
