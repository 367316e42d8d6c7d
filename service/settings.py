"""The service's one settings object: every knob, read from ``RESSHIFT_*`` variables.

Built once at start-up (``Settings()``) and handed to ``create_app``; nothing else in
the service reads the environment. Tests build their own (``Settings(models=...)``).

Lists and maps are written the way people type them in a shell::

    RESSHIFT_MODELS=sr=models/realsr_v3,inpaint=models/inpaint_imagenet
    RESSHIFT_MODELS=sr=models/realsr_v3,sr-diffir=models/diffir_x4   # both families
    RESSHIFT_API_KEYS=key-one,key-two
    RESSHIFT_DEVICES=cuda:0,cuda:1
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from export.limits import MAX_BATCH


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class Settings(BaseSettings):
    """Service configuration (env prefix ``RESSHIFT_``; see docs/service.md)."""

    model_config = SettingsConfigDict(env_prefix="RESSHIFT_", extra="ignore", frozen=True)

    # -- what is served --------------------------------------------------------------
    models: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: {"sr": "demo"},
        description="task=model directory pairs, of either family (model.json says "
        "resshift or diffir; task names are free, e.g. sr-diffir); 'demo' is the bundled model")
    devices: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["cpu"], description="one worker thread per device")
    torch_threads: Optional[int] = Field(
        default=None, ge=1, description="intra-op CPU threads per worker (default: torch's)")
    tile: Optional[int] = Field(
        default=None, ge=0, description="ResShift latent tile side (multiple of the model's "
        "unit); None = the model default (64), 0 = never tile (no cross-size batching). "
        "DiffIR models run whole up to 256x256 LQ pixels and tile beyond")
    face_size: int = Field(default=512, ge=8, description="side the face task requires")
    backend: Literal["torch", "onnxruntime", "tensorrt", "auto"] = Field(default="torch", description="what runs the networks: torch, "
                         "onnxruntime, tensorrt or auto (export.backends; graphs are exported "
                         "and checked at start-up when missing)")
    precision: Literal["fp32", "bf16", "fp16", "auto"] = Field(
        default="fp32", description="fp32, bf16 (CPUs with bf16: the VQGAN decoder), fp16 "
        "(CUDA: torch float16 autocast) or auto (fp16 on CUDA, bf16 on bf16 CPUs where "
        "it measures faster)")
    tf32: bool = Field(
        default=False, description="TF32 tensor-core math for float32 convolutions and "
        "matmuls on CUDA (torch and onnxruntime). Off by default: fp32 then means IEEE "
        "float32 (torch 2.13 would otherwise run convolutions in TF32 silently); for speed "
        "use precision fp16/auto, which TF32 does not affect")

    # -- batching and backpressure ---------------------------------------------------
    max_batch: int = Field(default=MAX_BATCH, ge=1, description="latent tiles per UNet call")
    max_wait_ms: float = Field(default=10.0, ge=0, description="longest a tile idles for "
                               "a fuller batch")
    batch_fill: float = Field(default=2.0, ge=1.0, description="a batch takes tiles of "
                              "lower-ranked requests while its measured time stays within "
                              "this many times that of the best-ranked request's tiles alone")
    queue_size: int = Field(default=64, ge=1, description="admitted, unfinished requests "
                            "(sync and async) before 429")
    request_timeout_s: float = Field(default=300.0, gt=0, description="deadline of a "
                                     "synchronous POST /v1/restore")
    job_timeout_s: float = Field(default=3600.0, gt=0, description="deadline of an "
                                 "asynchronous job")
    job_ttl_s: float = Field(default=3600.0, gt=0, description="how long finished jobs and "
                             "their results are kept")
    shutdown_grace_s: float = Field(default=30.0, ge=0, description="time in-flight jobs get "
                                    "to finish at shutdown")

    # -- input limits ------------------------------------------------------------------
    max_pixels: int = Field(default=4_000_000, ge=64, description="input width*height limit")
    min_side: int = Field(default=8, ge=1, description="smallest accepted input side")
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, description="request "
                                "body limit")

    # -- scale-out over Redis (resshift serve --role api|worker) -----------------------
    role: Literal["all", "api", "worker"] = Field(
        default="all", description="all: HTTP and workers in one process (no Redis); api: "
        "validate and queue on Redis; worker: run jobs from Redis (HTTP only for probes "
        "and /metrics)")
    redis_url: Optional[str] = Field(
        default=None, description="redis://host:port/db where api and worker processes "
        "meet; required by the api and worker roles")
    redis_prefix: str = Field(default="resshift:", min_length=1,
                              description="prefix of every Redis key of this deployment")
    visibility_timeout_s: float = Field(
        default=120.0, ge=4.0, description="a job held this long by a silent (dead) worker "
        "is taken over by another; live workers renew their jobs well before")
    max_attempts: int = Field(default=3, ge=1, description="deliveries of a job before it "
                              "goes to the dead-letter stream with its last error")
    worker_prefetch: Optional[int] = Field(
        default=None, ge=1, description="jobs one worker process holds at once (default: "
        "RESSHIFT_MAX_BATCH); more lets it batch across jobs, fewer leaves more for others")
    worker_name: Optional[str] = Field(
        default=None, description="consumer name in the Redis group (default host-pid)")

    # -- access ------------------------------------------------------------------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="accepted Bearer keys; empty = open")
    metrics_auth: bool = Field(default=False, description="require a key on /metrics too")

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value):
        if isinstance(value, str):
            pairs = {}
            for item in _split(value):
                task, sep, path = item.partition("=")
                if not sep or not task.strip() or not path.strip():
                    raise ValueError(f"RESSHIFT_MODELS item {item!r} is not task=path "
                                     "(e.g. sr=models/realsr_v3,inpaint=models/inpaint)")
                pairs[task.strip()] = path.strip()
            return pairs
        return value

    @field_validator("devices", "api_keys", mode="before")
    @classmethod
    def _parse_list(cls, value):
        return _split(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if not self.models:
            raise ValueError("RESSHIFT_MODELS is empty: serve at least one task=model_dir")
        if not self.devices:
            raise ValueError("RESSHIFT_DEVICES is empty: give at least one device (cpu)")
        if self.role != "all" and not self.redis_url:
            raise ValueError(f"role {self.role!r} needs RESSHIFT_REDIS_URL (e.g. "
                             "redis://127.0.0.1:6379/0): api and worker processes meet there")
        if not (self.redis_url or "redis://").startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"RESSHIFT_REDIS_URL {self.redis_url!r} is not a redis://, "
                             "rediss:// or unix:// URL")
        return self

    @property
    def prefetch(self) -> int:
        """Jobs a worker process takes from Redis at once (never more than it admits)."""
        return min(self.worker_prefetch or self.max_batch, self.queue_size)

    def key_values(self) -> list[bytes]:
        return [k.get_secret_value().encode() for k in self.api_keys]

