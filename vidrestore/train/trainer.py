"""`train`: the training loop of `vidrestore train`.

RUN/ holds config.yaml (the settings the run started with), train.jsonl (one record per
step, one per validation), checkpoints/step_NNNNNN.pt and checkpoints/last.pt (model, EMA,
optimiser and step; plain tensors and containers, read back with `weights_only=True`), and
val/step_NNNNNN.png (degraded | restored | clean strips of the first validation faces).

Resuming loads last.pt, cuts train.jsonl back to its step and goes on: the batches are a
function of (seed, step) (see `data.py`), so the curve continues exactly as if the run had
never stopped. Ctrl-C (SIGINT) or SIGTERM finishes the step under way, writes last.pt and
raises `TrainingInterrupted`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..errors import ConfigError, InputError, VidrestoreError
from ..metrics.quality import psnr, ssim
from ..models.arch.face_unet import FaceUNet, face_unet_from_state_dict
from .config import TrainConfig, config_from_dict
from .data import Batch, FaceCrops, PairSampler, TrainSampler, describe_split, validation_batch
from .degradation import Degrader, get_preset
from .losses import IdentityLoss, colour_loss, reconstruction, temporal_loss

log = logging.getLogger(__name__)

Forward = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


class TrainingInterrupted(VidrestoreError):
    exit_code = 130


@dataclass
class TrainResult:
    run: Path
    step: int
    checkpoint: Path
    val: dict[str, Any] | None
    gen: dict[str, Any] | None


# --------------------------------------------------------------------------- models


def build_model(cfg: TrainConfig) -> tuple[torch.nn.Module, Forward]:
    """The network to train and its [0, 1] -> [0, 1] forward function."""
    m = cfg.model
    if m.arch == "unet":
        if m.init:
            model = _face_unet_to_start_from(m.init)
        else:
            torch.manual_seed(cfg.seed)
            model = FaceUNet(m.widths, m.blocks)
        return model, lambda net, x: net(x)
    if not m.init:
        raise ConfigError("model.init: fine-tuning GFPGAN needs its weights: a registry name "
                          "(gfpgan-1.3, gfpgan-1.4) or an official-layout .pth file")
    from ..models import ModelStore
    from ..models.factory import load_model
    from ..stages.restore import gfpgan_forward

    descriptor = load_model(ModelStore(), m.init, "face_restorer", option="model.init").module
    if descriptor.architecture.id != "GFPGAN":
        raise ConfigError(f"model.init: {m.init} is {descriptor.architecture.name}, not GFPGAN")
    return descriptor.model.requires_grad_(True), gfpgan_forward


def _face_unet_to_start_from(init: str) -> FaceUNet:
    """FaceUNet to start from: a training checkpoint (.pt, its EMA), or a weight file or
    registry name (`vidrestore-face-v1`) loaded by the model factory, which refuses files
    that are no face restorer; a face restorer of another architecture is refused here."""
    if init.lower().endswith(".pt"):
        if not Path(init).is_file():
            raise ConfigError(f"model.init: {init}: no such checkpoint")
        try:
            state = torch.load(init, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling refusals and corrupt files alike
            raise ConfigError(f"model.init: cannot read the checkpoint {init} "
                              f"({str(exc).splitlines()[0]})") from exc
        return face_unet_from_state_dict(state.get("ema", state) if isinstance(state, dict)
                                         else state)
    from ..models import ModelStore
    from ..models.factory import load_model

    descriptor = load_model(ModelStore(), init, "face_restorer", option="model.init").module
    if not isinstance(descriptor.model, FaceUNet):
        raise ConfigError(f"model.init: {init} is {descriptor.architecture.name}, not a "
                          "vidrestore FaceUNet (model.arch unet); for GFPGAN set model.arch "
                          "gfpgan")
    return descriptor.model.train().requires_grad_(True)


# --------------------------------------------------------------------------- schedule and EMA


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up to optim.lr, then cosine decay to optim.min_lr at optim.steps."""
    o = cfg.optim
    if step < o.warmup:
        return o.lr * (step + 1) / o.warmup
    progress = min(1.0, (step - o.warmup) / max(1, o.steps - o.warmup))
    return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """ema <- d * ema + (1 - d) * model, with d ramped up over the first steps."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - d)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


# --------------------------------------------------------------------------- the loop


class Trainer:
    def __init__(self, cfg: TrainConfig, data: str | os.PathLike[str], run: Path,
                 device: torch.device, gen_data: str | os.PathLike[str] | None = None,
                 progress: bool = True) -> None:
        self.cfg, self.run, self.device, self.progress = cfg, run, device, progress
        torch.set_num_threads(cfg.threads)
        preset = get_preset(cfg.data.degradation, cfg.data.degradation_overrides)
        self.train_crops = FaceCrops(data, "train", cfg.data.cache_in_memory)
        self.val_crops = _optional_split(data, "val")
        self.gen_crops = _gen_split(gen_data) if gen_data else None
        self.degrader = Degrader(preset, cfg.seed, cfg.data.native_scale)
        self.sampler = TrainSampler(self.train_crops, self.degrader, cfg.seed, cfg.data.batch,
                                    0 if cfg.model.arch == "gfpgan" else cfg.data.patch)
        self.pairs = self._open_pairs()
        self.model, self.forward = build_model(cfg)
        self.model.to(device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad], lr=cfg.optim.lr,
            betas=(0.9, 0.99), weight_decay=cfg.optim.weight_decay)
        self.identity = self._identity_loss() if self._needs_identity() else None
        self.lpips, self.lpips_note = self._open_lpips()
        self.step = 0
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.model.to(memory_format=torch.channels_last)
        self._stop = False

    def _open_pairs(self) -> PairSampler | None:
        lossc = self.cfg.loss
        if lossc.temporal_weight <= 0:
            return None
        pairs = PairSampler(self.train_crops, self.degrader, self.cfg.seed,
                            lossc.temporal_batch,
                            0 if self.cfg.model.arch == "gfpgan" else self.cfg.data.patch,
                            lossc.temporal_gap)
        if not pairs.pairs:
            log.warning("temporal loss is off: the training split has no neighbouring "
                        "video faces (at most %d frames apart)", lossc.temporal_gap)
            return None
        return pairs

    def _needs_identity(self) -> bool:
        return self.cfg.loss.identity_weight > 0 or self.val_crops is not None

    def _identity_loss(self) -> IdentityLoss:
        from ..models import ModelStore
        from ..models.factory import DLIB_DESCRIPTOR, load_model

        net = load_model(ModelStore(), DLIB_DESCRIPTOR, "identity_net", self.device,
                         option="loss.identity").module
        return IdentityLoss(net)

    def _open_lpips(self):
        from ..metrics.perceptual import open_lpips
        from ..models import ModelStore

        metric, reason = open_lpips(ModelStore(), self.device)
        if self.cfg.loss.lpips_weight > 0 and metric is None:
            log.warning("LPIPS loss is off: %s", reason)
        return metric, reason

    # -- state --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "step": self.step,
                "config": self.cfg.to_dict()}

    def save(self) -> Path:
        folder = self.run / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step_{self.step:06d}.pt"
        _save_atomically(self.state(), path)
        _save_atomically(self.state(), folder / "last.pt")
        log.info("checkpoint %s", path)
        return path

    def load(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        _truncate_log(self.run / "train.jsonl", self.step)

    # -- steps --------------------------------------------------------------------------

    def _autocast(self):
        return torch.autocast("cuda", torch.bfloat16) if self.cuda else nullcontext()

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.cuda else x

    def train_step(self) -> dict[str, float]:
        cfg, lossc = self.cfg, self.cfg.loss
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(cfg, self.step)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals = {"rec": 0.0, "identity": math.nan, "lpips": math.nan, "temporal": math.nan,
                  "colour": 0.0 if lossc.colour_weight > 0 else math.nan}
        samples = 0
        for micro in range(cfg.optim.accumulate):
            batch = self.sampler(self.step, stream=2 + micro)
            clean, low = self._to_device(batch.clean), self._to_device(batch.degraded)
            with self._autocast():
                out = self.forward(self.model, low).float()
            rec = reconstruction(lossc.rec, out, clean)
            loss = lossc.rec_weight * rec
            totals["rec"] += rec.item() / cfg.optim.accumulate
            if lossc.colour_weight > 0:
                col = colour_loss(out, clean)
                loss = loss + lossc.colour_weight * col
                totals["colour"] += col.item() / cfg.optim.accumulate
            if self.lpips is not None and lossc.lpips_weight > 0:
                lp = self.lpips.net(out, clean, normalize=True).mean()
                loss = loss + lossc.lpips_weight * lp
                totals["lpips"] = lp.item()
            (loss / cfg.optim.accumulate).backward()
            samples += clean.shape[0]
        if self.identity is not None and lossc.identity_weight > 0 and \
                self.step % lossc.identity_every == 0:
            whole = self.sampler(self.step, stream=1, batch=lossc.identity_batch, whole=True)
            clean, low = self._to_device(whole.clean), self._to_device(whole.degraded)
            with self._autocast():
                out = self.forward(self.model, low).float()
            ident = self.identity(out, clean, whole.chip.to(self.device))
            (lossc.identity_weight * ident).backward()
            totals["identity"] = ident.item()
            samples += clean.shape[0]
        pair = self.pairs(self.step) if self.pairs is not None else None
        if pair is not None:
            low = self._to_device(torch.cat([pair.degraded0, pair.degraded1]))
            with self._autocast():
                out0, out1 = self.forward(self.model, low).float().chunk(2)
            temp = temporal_loss(out0, out1, self._to_device(pair.clean0),
                                 self._to_device(pair.clean1))
            (lossc.temporal_weight * temp).backward()
            totals["temporal"] = temp.item()
            samples += low.shape[0]
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        self.optimizer.step()
        update_ema(self.ema, self.model, cfg.optim.ema_decay, self.step)
        self.step += 1
        totals["total"] = lossc.rec_weight * totals["rec"] + sum(
            w * totals[k] for k, w in (("identity", lossc.identity_weight),
                                       ("lpips", lossc.lpips_weight),
                                       ("temporal", lossc.temporal_weight),
                                       ("colour", lossc.colour_weight))
            if w > 0 and not math.isnan(totals[k]))
        totals["samples"] = samples
        return totals

    # -- evaluation ---------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, batch: Batch, model: torch.nn.Module | None = None,
                 chunk: int = 2) -> tuple[dict[str, Any], torch.Tensor]:
        """Figures of `model` (the EMA by default) and of passthrough on whole faces."""
        model = model or self.ema
        model.eval()
        outs = []
        for start in range(0, batch.degraded.shape[0], chunk):
            low = self._to_device(batch.degraded[start:start + chunk])
            with self._autocast():
                outs.append(self.forward(model, low).float().clamp(0, 1).cpu())
        out = torch.cat(outs)
        figures: dict[str, Any] = {"faces": int(out.shape[0])}
        for name, image in (("model", out), ("passthrough", batch.degraded)):
            figures[f"psnr_{name}"] = _mean(psnr(image, batch.clean))
            figures[f"ssim_{name}"] = _mean(ssim(image, batch.clean))
            if self.identity is not None:
                sims = self.identity.similarity(image.to(self.device),
                                                batch.clean.to(self.device),
                                                batch.chip.to(self.device))
                figures[f"identity_{name}"] = _mean(sims.cpu())
            if self.lpips is not None:
                figures[f"lpips_{name}"] = _mean(self.lpips(image, batch.clean))
        return figures, out

    def validate(self, kind: str = "val") -> dict[str, Any] | None:
        crops = self.val_crops if kind == "val" else self.gen_crops
        if crops is None or (kind == "val" and self.cfg.data.val_faces == 0):
            return None
        batch = validation_batch(crops, self.degrader, self.cfg.data.val_faces
                                 if kind == "val" else max(self.cfg.data.val_faces, 32),
                                 self.cfg.seed + (0 if kind == "val" else 17))
        figures, out = self.evaluate(batch)
        _save_strip(self.run / kind / f"step_{self.step:06d}.png", batch, out)
        record = {"kind": kind, "step": self.step, **figures}
        if self.lpips is None:
            record["lpips_note"] = self.lpips_note
        _append(self.run / "train.jsonl", record)
        return record

    # -- the loop -----------------------------------------------------------------------

    def fit(self, stop_at: int | None = None) -> TrainResult:
        """Train up to optim.steps, or pause at `stop_at` (a checkpoint, no final
        validation; the schedule stays that of optim.steps, so a resume goes on the same)."""
        cfg = self.cfg
        end = min(cfg.optim.steps, stop_at or cfg.optim.steps)
        bar = _progress(cfg.optim.steps, self.step, self.progress)
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._on_signal)
        val = gen = None
        try:
            while self.step < end:
                started = time.perf_counter()
                try:
                    totals = self.train_step()
                except KeyboardInterrupt:
                    self._stop = True  # a second Ctrl-C inside a step: keep the last state
                    break
                seconds = time.perf_counter() - started
                record = {"kind": "step", "step": self.step,
                          "lr": learning_rate(cfg, self.step - 1),
                          **{k: _finite(v) for k, v in totals.items()},
                          "seconds": round(seconds, 4),
                          "samples_per_s": round(totals["samples"] / max(seconds, 1e-9), 3)}
                _append(self.run / "train.jsonl", record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{totals['total']:.4f}",
                                    samples_s=f"{record['samples_per_s']:.1f}")
                if self._stop:
                    break
                if self.step % cfg.val_every == 0 and self.step < end:
                    val = self.validate("val")
                if self.step % cfg.checkpoint_every == 0:
                    self.save()
            checkpoint = self.save()
            if self._stop:
                raise TrainingInterrupted(
                    f"training stopped at step {self.step}; {checkpoint} holds it: "
                    f"`vidrestore train --resume --out {self.run}` goes on")
            if self.step >= cfg.optim.steps:
                val = self.validate("val")
                gen = self.validate("gen")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if bar is not None:
                bar.close()
        return TrainResult(self.run, self.step, checkpoint, val, gen)

    def _on_signal(self, signum, frame) -> None:
        if self._stop:  # asked twice: stop now
            raise KeyboardInterrupt
        log.warning("signal %d: stopping after this step and writing a checkpoint", signum)
        self._stop = True


def train(data: str | os.PathLike[str], run: str | os.PathLike[str], cfg: TrainConfig, *,
          resume: bool = False, gen_data: str | os.PathLike[str] | None = None,
          device: torch.device | str = "cpu", progress: bool = True,
          steps: int | None = None, stop_at: int | None = None) -> TrainResult:
    """Train (or with `resume`, go on training) into the folder `run`.

    steps: replaces optim.steps (the length of the schedule); stop_at: pause there."""
    run = Path(run)
    last = run / "checkpoints" / "last.pt"
    if resume:
        if not last.is_file():
            raise InputError(f"{run}: nothing to resume (no checkpoints/last.pt)")
        saved = torch.load(last, map_location="cpu", weights_only=True)["config"]
        cfg = config_from_dict(saved)
    elif last.is_file():
        raise InputError(f"{run} already holds a run; pass --resume to go on with it, or "
                         "choose another --out")
    if steps is not None:
        cfg = config_from_dict({**cfg.to_dict(), "optim": {**cfg.to_dict()["optim"],
                                                          "steps": steps}})
    run.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, data, run, torch.device(device), gen_data, progress)
    if resume:
        trainer.load(last)
    else:
        (run / "config.yaml").write_text(yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False))
        info = {"kind": "start", "data": str(data), "gen_data": str(gen_data) if gen_data else None,
                "train": describe_split(trainer.train_crops),
                "val": describe_split(trainer.val_crops) if trainer.val_crops else None,
                "gen": describe_split(trainer.gen_crops) if trainer.gen_crops else None,
                "parameters": sum(p.numel() for p in trainer.model.parameters()),
                "device": str(device), "torch": torch.__version__,
                "machine": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(), "lpips": trainer.lpips_note or "on"}
        _append(run / "train.jsonl", info)
    return trainer.fit(stop_at)


# --------------------------------------------------------------------------- helpers


def _optional_split(data, split: str) -> FaceCrops | None:
    try:
        return FaceCrops(data, split)
    except InputError:
        return None


def _gen_split(data) -> FaceCrops:
    """All faces of the generalisation dataset (its own split does not matter)."""
    crops = _optional_split(data, "val") or FaceCrops(data, "train")
    return crops


def _progress(total: int, done: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="train", unit="step", file=sys.stderr,
                dynamic_ncols=True, disable=not sys.stderr.isatty())


def _save_atomically(state: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Drop records of steps after `step` (written after the checkpoint being resumed)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _save_strip(path: Path, batch: Batch, out: torch.Tensor, count: int = 4) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    picks = np.linspace(0, out.shape[0] - 1, num=min(count, out.shape[0])).round().astype(int)
    for i in picks:
        tiles = [batch.degraded[i], out[i], batch.clean[i]]
        rows.append(torch.cat([t.clamp(0, 1) for t in tiles], 2))
    image = (torch.cat(rows, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    small = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2),
                       interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))


def _mean(values: torch.Tensor) -> float | None:
    v = values.double()
    v = v[~torch.isnan(v)]
    return round(float(v.mean()), 5) if v.numel() else None


def _finite(value: float) -> float | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return round(value, 6) if isinstance(value, float) else value


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value

