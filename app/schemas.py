"""Request and response bodies of the REST API (they generate the OpenAPI schema)."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from model_core.analysis.requests import MAX_FRAMES as MAX_PREVIEWS
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
    previews: Annotated[StrictInt, Field(ge=0, le=MAX_PREVIEWS)] | None = Field(
        None, description="keep N pictures of each image's predicted x_0 at uniformly spaced sampling steps "
                          "(the paper's Figure 5); the last is the image itself. Listed under each image's "
                          "'previews'")


class PreviewOut(BaseModel):
    frame: int = Field(description="0 .. previews - 1")
    step: int = Field(description="sampling steps done when it was taken (1 .. the job's steps)")
    timestep: int = Field(description="the training timestep t of that step")
    url: str


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
    previews: list[PreviewOut] = Field(default_factory=list, description="with 'previews': N, its trajectory")


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
    unavailable_methods: dict[str, str] = Field(
        default_factory=dict, description="methods this preset cannot offer, with the reason (e.g. 'diffusion' "
                                          "on a preset whose diffusion model is unconditional)")
    guidance_cost: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="per guided method, the network evaluations one guided step adds per "
                                          "image beyond the sampler's UNet forward: {'unet': n, 'classifier': m} "
                                          "(classifier: forward + backward pairs)")
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


# -- analyses (model_core.analysis) ---------------------------------------------------------------

def _registered_analysis(name: str) -> str:
    from model_core.analysis import kinds

    kinds.get(name)  # ValueError naming the analyses -> 422 at this field
    return name


def _analysis_names() -> list[str]:
    from model_core.analysis import kinds

    return list(kinds.names())


AnalysisKindName = Annotated[str, StringConstraints(max_length=32), AfterValidator(_registered_analysis),
                             Field(json_schema_extra=lambda schema: schema.update(enum=_analysis_names()))]
Name = Annotated[str, StringConstraints(max_length=64)]
Count = Annotated[StrictInt, Field(ge=-(2**31), le=2**31)]
Number = Annotated[float, Field(allow_inf_nan=False)]


class ImageUpload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    png_base64: Annotated[str, StringConstraints(max_length=4_000_000)] = Field(
        description="the PNG file, base64-encoded; it must have the preset's size (28x28 for the demo)")
    label: Label | None = Field(None, description="its true class (required for gradients)")
    target: Label | None = Field(None, description="maximize: the class to maximise toward")


class AnalysisRequest(BaseModel):
    """One analysis; which fields apply depends on ``kind`` (others are refused, naming the field)."""
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"kind": "gradients", "preset": "demo", "heldout": 100, "timesteps": [0, 100, 300]},
        {"kind": "maximize", "preset": "demo", "heldout": 200, "show": 4},
        {"kind": "trajectory", "labels": [3, 8], "seed": 5, "frames": 6},
        {"kind": "compare", "labels": [0, 1, 2, 3], "arms": ["none", "vanilla", "robust"]},
        {"kind": "sweep", "methods": ["none", "robust"], "scales": [0.5, 1, 2], "per_class": 10},
    ]})

    kind: AnalysisKindName = Field(description="gradients | maximize | trajectory | compare | sweep")
    preset: Name | None = Field(None, description="default: the server's default preset")
    images: list[ImageUpload] | None = Field(None, max_length=1024, description="gradients, maximize: uploaded "
                                             "images (else held-out ones); at most RGUIDE_MAX_IMAGES")
    heldout: Count | None = Field(None, description="gradients, maximize: how many held-out images "
                                                    "(default: all)")
    classifiers: list[Name] | None = Field(None, max_length=64,
                                           description="default: all of the preset's classifier networks")
    seed: Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)] | None = Field(
        None, description="noise, picks and random targets; the first sample seed (default 0)")
    show: Count | None = Field(None, description="images in the picture (the numbers use all)")
    timesteps: list[Count] | None = Field(None, max_length=64, description="gradients: the picture's timesteps")
    buckets: Count | None = Field(None, description="gradients: timestep buckets of the numbers (default 4)")
    threshold: Number | None = Field(None, description="gradients: clean pixels above it are the object")
    targets: list[Label] | None = Field(None, max_length=100_000, description="maximize: a target per image")
    eps: Number | None = Field(None, description="maximize: L2 radius (default: the paper's, scaled)")
    attack_steps: Count | None = Field(None, description="maximize: PGD steps (default 7)")
    step_size: Number | None = Field(None, description="maximize: default 2.5 * eps / steps")
    judge: Literal["features", "none"] | None = Field(
        None, description="maximize: the network that reads the results ('features': the preset's)")
    labels: list[Label] | None = Field(None, max_length=1024, description="trajectory, compare: classes")
    seeds: list[Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]] | None = Field(
        None, max_length=1024, description="trajectory, compare: one per label (default: seed + i)")
    arms: list[Name] | None = Field(None, max_length=32, description="trajectory, compare: arm names or "
                                                                     "'method=scale'")
    frames: Count | None = Field(None, description="trajectory: frames per run (default 8)")
    steps: StepsSpec | None = Field(None, description="trajectory, compare, sweep: respacing")
    sampler: SamplerName | None = None
    methods: list[Name] | None = Field(None, max_length=32, description="sweep: methods (default: none and the "
                                                                             "classifier networks; 'diffusion' when named)")
    scales: list[Number] | None = Field(None, max_length=32, description="sweep: guidance scales")
    per_class: Count | None = Field(None, description="sweep: images per class and row (default 50)")
    k: Count | None = Field(None, description="sweep: k of the k-NN precision/recall (default 3)")


class AnalysisFile(BaseModel):
    name: str
    url: str
    sha256: str
    media_type: str
    size_bytes: int


class AnalysisInput(BaseModel):
    sha256: str
    label: int | None
    url: str


class AnalysisLinks(BaseModel):
    self: str
    cancel: str
    page: str = Field(description="the result as a web page (researcher sign-in)")
    sidecar: str | None = Field(description="the JSON sidecar, once the job succeeded")


class AnalysisOut(BaseModel):
    id: str
    kind: str
    status: Status
    preset: str
    settings: dict = Field(description="the resolved settings: every default written out")
    num_images: int
    progress: float = Field(ge=0, le=1)
    progress_step: int
    progress_total: int
    cancel_requested: bool
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    summary: dict | None = Field(description="the analysis's numbers, once it succeeded")
    reproduce: str | None = Field(description="the command that reproduces it from its sidecar")
    files: list[AnalysisFile]
    inputs: list[AnalysisInput]
    links: AnalysisLinks


class AnalysisList(BaseModel):
    items: list[AnalysisOut]


# -- /v1/classifications ------------------------------------------------------------------
def _defence(name: str) -> str:
    from model_core.robustness.threats import DEFENCES

    if name not in DEFENCES:
        raise ValueError(f"method must be one of {', '.join(DEFENCES)}")
    return name


class ClassificationRequest(BaseModel):
    """One PNG classified by a preset's defence (``model_core.robustness.threats.DEFENCES``)."""
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"preset": "demo", "method": "diffusion", "png_base64": "iVBORw0KGgo..."},
        {"preset": "demo", "method": "robust", "png_base64": "iVBORw0KGgo..."},
    ]})

    png_base64: Annotated[str, StringConstraints(max_length=4_000_000)] = Field(
        description="the PNG file, base64-encoded; it must have the preset's size (28x28 for the demo)")
    method: Annotated[str, StringConstraints(max_length=16), AfterValidator(_defence)] = Field(
        "diffusion", description="diffusion (the diffusion model as a classifier) | vanilla | robust (the "
                                 "time-dependent classifiers at t = 0)")
    preset: Name | None = Field(None, description="default: the server's default preset")
    schedule: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        None, description="diffusion: timesteps and eliminations, e.g. 10:3,30 (default) or 50:5,500")
    seed: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] | None = Field(
        None, description="diffusion: the seed of the shared timesteps and noise (default 0)")


class ClassificationOut(BaseModel):
    id: str
    status: Status
    method: str
    preset: str
    settings: dict
    image_sha256: str
    progress: float = Field(ge=0, le=1)
    progress_step: int = Field(description="network evaluations done")
    progress_total: int
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    prediction: int | None = Field(description="the predicted class index, once succeeded")
    class_name: str | None
    probabilities: list[float] | None = Field(description="per class (diffusion: 0 for eliminated classes)")
    network_evaluations: int | None
    links: dict[str, str]


class ClassificationList(BaseModel):
    items: list[ClassificationOut]
