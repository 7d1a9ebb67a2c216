"""What a client may choose for a job, checked before it is queued.

Every choice is a name from a fixed list or a bounded number, never a path: the server runs
only the presets and models it has, never a file the client sent. `to_overrides` turns the
options into `vidrestore.load_config` overrides, the same keys the CLI's flags set.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..config import SCALES

Preset = Literal["default", "fast", "quality"]
FaceModel = Literal["gfpgan-1.3", "gfpgan-1.4", "restoreformer++", "vidrestore-face-v2",
                    "vidrestore-face-v1",
                    "passthrough", "none"]
BackgroundModel = Literal["realesrgan-x2plus", "realesrgan-x4plus", "realesr-general-x4v3",
                          "realesr-animevideov3", "none"]


class JobOptions(BaseModel):
    """A job's options; a field left out takes the preset's value."""

    model_config = ConfigDict(extra="forbid")

    preset: Preset = "default"
    scale: int | None = Field(default=None, description="output size / input size: 1, 2 or 4")
    face_model: FaceModel | None = None
    fidelity: float | None = Field(default=None, ge=0, le=1)
    identity_guard: bool | None = None
    bg_model: BackgroundModel | None = None
    white_balance: bool | None = None
    denoise: bool | None = None
    clahe: bool | None = None

    @field_validator("scale")
    @classmethod
    def _known_scale(cls, value: int | None) -> int | None:
        if value is not None and value not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(map(str, SCALES))}")
        return value

    def to_overrides(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "face": {"model": self.face_model, "fidelity": self.fidelity,
                     "identity_guard": self.identity_guard},
            "background": {"model": self.bg_model},
            "preprocess": {step: {"enabled": getattr(self, step)}
                           for step in ("white_balance", "denoise", "clahe")},
        }


FIELDS = tuple(JobOptions.model_fields)
