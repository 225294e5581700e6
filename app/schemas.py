"""Request and response bodies of the REST API (they generate the OpenAPI schema)."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from model_core.sampling import registry as samplers

Label = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)] | Annotated[str, StringConstraints(max_length=200)]
Scale = Annotated[float, Field(allow_inf_nan=False, description="positive guidance scale")]
StepsSpec = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)] | Annotated[str, StringConstraints(max_length=64)]
Status = Literal["queued", "running", "succeeded", "failed", "canceled"]


def _registered_sampler(name: str) -> str:
    samplers.get(name)  # ValueError naming the registered samplers -> 422 at this field
    return name


# The enum is read from the registry when the OpenAPI document is built, not at import,
# so a sampler registered before the app starts is offered like the built-in ones.
SamplerName = Annotated[str, StringConstraints(max_length=32), AfterValidator(_registered_sampler),
                        Field(json_schema_extra=lambda schema: schema.update(enum=list(samplers.names())))]


class GenerationRequest(BaseModel):
    # strict: "scale": "1", "scale": true and "seed": "7" are errors, not silently converted.
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"preset": "tiny", "class_labels": [0, "blue"], "guidance": "pair", "steps": "10", "seed": 7},
        {"class_labels": [3], "guidance": "robust", "scale": 1.0, "steps": "ddim25"},
    ]})

    preset: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        None, description="preset name (GET /v1/presets); default: the server's default preset")
    class_labels: list[Label] = Field(
        ..., min_length=1, max_length=1024,
        description="one image (or one robust/vanilla pair) per label: a class index or a class name")
    guidance: Annotated[str, StringConstraints(max_length=64)] = Field(
        ..., description="'none', 'vanilla', 'robust', 'pair' (seed-matched robust and vanilla images), "
                         "or another classifier the preset lists")
    scale: Scale | dict[Annotated[str, StringConstraints(max_length=64)], Scale] | None = Field(
        None, description="guidance scale: one number, or per method, e.g. {\"robust\": 1.0, \"vanilla\": 0.5}; "
                          "default: the preset's")
    steps: StepsSpec | None = Field(
        None, description="respacing: 250, '250', 'ddim50', 'logsnr20' (uniform in log-SNR) or '10,15,20'; "
                          "default: the preset's")
    seed: Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)] | None = Field(
        None, description="image i uses seed + i; default: chosen at random and reported")
    sampler: SamplerName | None = Field(None, description="default: 'ddim' for 'ddimN' steps, else the preset's")


class PairLink(BaseModel):
    pair_index: int = Field(description="position of the pair in the request's class_labels")
    partner_id: str = Field(description="id of the other image of the pair (same label and seed)")
    partner_method: str


class ImageOut(BaseModel):
    id: str
    url: str = Field(description="PNG; the file carries its settings in tEXt chunks")
    index: int = Field(description="position of its label in the request's class_labels")
    label: int
    class_name: str
    seed: int
    method: str
    scale: float
    steps: str
    sampler: str
    width: int
    height: int
    sha256: str
    pair: PairLink | None = None


class PairOut(BaseModel):
    index: int
    label: int
    class_name: str
    seed: int
    robust: str = Field(description="image id")
    vanilla: str = Field(description="image id")


class Links(BaseModel):
    self: str
    events: str
    cancel: str


class GenerationOut(BaseModel):
    id: str
    status: Status
    preset: str
    guidance: str
    class_labels: list[int]
    class_names: list[str]
    seeds: list[int]
    scale: dict[str, float] = Field(description="the scale used per guided method")
    steps: str
    sampler: str
    num_images: int
    progress: float = Field(ge=0, le=1, description="fraction of sampling steps done")
    progress_step: int
    progress_total: int
    cancel_requested: bool
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    images: list[ImageOut]
    pairs: list[PairOut] = Field(description="for guidance 'pair': the two images of each label, linked")
    links: Links


class GenerationList(BaseModel):
    items: list[GenerationOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page; null on the last")


class ClassOut(BaseModel):
    index: int
    name: str


class ArmOut(BaseModel):
    name: str
    method: str
    scale: float


class PresetOut(BaseModel):
    name: str
    description: str
    image_size: int
    channels: int
    num_classes: int
    classes: list[ClassOut]
    guidance_methods: list[str]
    default_scales: dict[str, float]
    arms: list[ArmOut] = Field(description="named (method, scale) settings of the preset")
    comparison: list[str] = Field(description="the two arms that guidance 'pair' samples, seed-matched")
    max_scale: float
    default_steps: str
    default_sampler: str
    available: bool = Field(description="false when weight files are missing on this server")


class Limits(BaseModel):
    max_images_per_request: int
    max_scale: float
    max_steps: int
    generation_requires_key: bool
    rate_limit: str | None


class PresetList(BaseModel):
    default: str
    presets: list[PresetOut]
    limits: Limits


class Problem(BaseModel):
    """RFC 9457 problem details, as every non-validation error is sent."""
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None


class Check(BaseModel):
    ok: bool
    detail: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, Check]


class Health(BaseModel):
    status: Literal["ok"]
