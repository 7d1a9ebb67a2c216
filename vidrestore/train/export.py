"""Export a training run's EMA weights as one safetensors file with its model card.

The file holds the network's tensors only (what `load_image_model` reads through spandrel,
with FaceUNet or GFPGAN detected from the keys) and, in its metadata, `model_card`: a JSON
string with the architecture, data sources, steps and figures. The same card is written
beside it as FILE.md for people.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..errors import InputError


def read_run_log(run: Path) -> list[dict[str, Any]]:
    path = run / "train.jsonl"
    if not path.is_file():
        raise InputError(f"{run}: no train.jsonl; is it a `vidrestore train --out` folder?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def export_run(run: str | os.PathLike[str], out: str | os.PathLike[str], *,
               name: str | None = None, extra: dict[str, Any] | None = None,
               half: bool = True) -> dict[str, Any]:
    """Write `out` (.safetensors) and `out`.md from RUN/checkpoints/last.pt; return the card.

    half: store float weights as float16 (half the size; they load back into float32, and
    the outputs of FaceUNet move by under 1e-3, see the tests)."""
    run, out = Path(run), Path(out)
    checkpoint = run / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        raise InputError(f"{run}: no checkpoints/last.pt to export")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    weights = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
               for k, v in state["ema"].items()}
    records = read_run_log(run)
    card = model_card(state, records, name or out.stem, extra or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(weights, str(tmp), metadata={"model_card": json.dumps(card),
                                           "format": "vidrestore-trained"})
    os.replace(tmp, out)
    out.with_suffix(".md").write_text(card_markdown(card))
    return card


def model_card(state: dict[str, Any], records: list[dict[str, Any]], name: str,
               extra: dict[str, Any]) -> dict[str, Any]:
    config = state["config"]
    start = next((r for r in records if r.get("kind") == "start"), {})
    steps = [r for r in records if r.get("kind") == "step"]
    val = [r for r in records if r.get("kind") == "val"]
    gen = [r for r in records if r.get("kind") == "gen"]
    return {
        "name": name,
        "architecture": config["model"],
        "parameters": sum(v.numel() for k, v in state["ema"].items()
                          if v.is_floating_point()),
        "training": {"steps": int(state["step"]),
                     "samples_seen": int(sum(r.get("samples", 0) for r in steps)),
                     "seconds": round(sum(r.get("seconds", 0) for r in steps), 1),
                     "loss": config["loss"], "optim": config["optim"],
                     "data": config["data"], "seed": config["seed"],
                     "device": start.get("device"), "threads": start.get("threads"),
                     "torch": start.get("torch")},
        "data_sources": {"train": start.get("train"), "val": start.get("val"),
                         "generalisation": start.get("gen")},
        "figures": {"val": val[-1] if val else None, "generalisation": gen[-1] if gen else None},
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def card_markdown(card: dict[str, Any]) -> str:
    def sources(part):
        if not part:
            return "none"
        return f"{part['faces']} faces from " + ", ".join(Path(s).name for s in part["sources"])

    lines = [f"# {card['name']}", "",
             "A face restorer trained by `vidrestore train` (aligned 512 px FFHQ-template "
             "crops in, the same out).", "",
             f"- Architecture: `{json.dumps(card['architecture'])}`, "
             f"{card['parameters']:,} parameters",
             f"- Training: {card['training']['steps']} steps, "
             f"{card['training']['samples_seen']} samples, "
             f"{card['training']['seconds'] / 3600:.2f} h on {card['training']['device']} "
             f"({card['training']['threads']} threads, torch {card['training']['torch']})",
             f"- Loss: `{json.dumps(card['training']['loss'])}`",
             f"- Degradation: preset `{card['training']['data']['degradation']}`, "
             f"patches of {card['training']['data']['patch']} px",
             f"- Train data: {sources(card['data_sources']['train'])}",
             f"- Validation data (held out by source and identity): "
             f"{sources(card['data_sources']['val'])}",
             f"- Generalisation data (never seen): "
             f"{sources(card['data_sources']['generalisation'])}", ""]
    for label, key in (("Validation", "val"), ("Generalisation", "generalisation")):
        fig = card["figures"].get(key)
        if not fig:
            continue
        lines += [f"## {label} figures ({fig['faces']} whole faces, degraded by the training "
                  "preset; model vs passthrough)", "",
                  "| figure | model | passthrough |", "| --- | --- | --- |"]
        for metric in ("psnr", "ssim", "lpips", "identity"):
            if f"{metric}_model" in fig:
                lines.append(f"| {metric} | {fig[f'{metric}_model']} | "
                             f"{fig[f'{metric}_passthrough']} |")
        lines.append("")
    for key in sorted(set(card) - {"name", "architecture", "parameters", "training",
                                   "data_sources", "figures"}):
        lines.append(f"- {key}: {json.dumps(card[key])}")
    return "\n".join(lines) + "\n"
