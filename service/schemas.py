"""Request and response bodies of the HTTP API (pydantic; no torch)."""

from __future__ import annotations

from enum import Enum
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

OutputFormat = Literal["png", "jpeg", "webp"]
MAX_SEED = 2 ** 63 - 1


class RestoreJSON(BaseModel):
    """``POST /v1/restore`` / ``POST /v1/jobs`` as JSON: images as base64 (or data URLs)."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="the input image, base64 (a data: URL works too)")
    task: Optional[str] = Field(default=None, description="a served task (sr, inpaint, "
                                "face...); may be omitted when only one task is served")
    mask: Optional[str] = Field(default=None, description="inpainting mask, base64; white = "
                                "area to fill; same size as the image")
    # strict: a JSON integer only (not true, "7", 7.0 or " 7")
    seed: Optional[int] = Field(default=None, ge=0, le=MAX_SEED, strict=True,
                                description="noise seed; random when omitted (see X-Seed)")
    output_format: OutputFormat = "png"


class RestoreForm(BaseModel):
    """The multipart form of ``POST /v1/restore`` (documents the schema; parsed by hand)."""

    image: bytes = Field(json_schema_extra={"format": "binary"})
    task: Optional[str] = None
    mask: Optional[bytes] = Field(default=None, json_schema_extra={"format": "binary"})
    seed: Optional[int] = Field(default=None, ge=0, le=MAX_SEED)
    output_format: OutputFormat = "png"


class JobState(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    @property
    def finished(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.canceled)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class JobOut(BaseModel):
    id: str
    status: JobState
    task: Optional[str] = None
    seed: Optional[int] = None
    error: Optional[ErrorDetail] = None


class Limits(BaseModel):
    max_pixels: int
    min_side: int
    max_body_bytes: int
    input_size: Optional[int] = Field(default=None, description="required side (face task)")


class ModelOut(BaseModel):
    task: str
    model: str
    family: str
    kind: str = Field(description="what the model does: sr, inpaint, face, restore")
    scale: int
    steps: int
    needs_mask: bool
    latent_tile: Optional[int] = Field(description="ResShift latent tile side; null = "
                                       "untiled, and for DiffIR models")
    input_multiple: int
    backend: str
    precision: str
    devices: list[str]
    limits: Limits


class ModelsOut(BaseModel):
    models: list[ModelOut]


class Health(BaseModel):
    status: str
    detail: Optional[str] = None
