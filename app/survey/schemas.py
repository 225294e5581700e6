"""Request and response bodies of the survey API (they generate its OpenAPI schema)."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
)

from app.schemas import Label, SamplerName, StepsSpec

DEFAULT_QUESTION = "Which image is more realistic, and more aligned to the description?"
DEFAULT_INSTRUCTIONS = (
    "You will see pairs of images. Each pair was made for the class named above the images. "
    "For each pair, choose the image that is more realistic and more aligned to the description: "
    "Left or Right. If you see no difference, choose Same. There are no right or wrong answers; "
    "please go with your honest impression. On a keyboard, use the left arrow (or 1) for Left, "
    "the right arrow (or 2) for Right and the down arrow (or 0) for Same."
)
DEFAULT_CONSENT = (
    "This is a research study of how people judge generated images. Taking part is voluntary and you may "
    "stop at any time by closing the page. We record your answers, which image was on which side, how long "
    "each answer took, and the participant id the recruiting platform passed to us (or a random id). We record "
    "no name, e-mail or IP address. Answers are analysed and published only in aggregate."
)

def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL characters; refuse them here rather than fail on insert.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000),
                 AfterValidator(_no_nul)]
Method = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Scale = Annotated[float, Field(allow_inf_nan=False, description="positive guidance scale")]


class StudyCreate(BaseModel):
    # strict: numbers and booleans must be JSON numbers and booleans ("attention_checks": "yes" is an error).
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"title": "Robust vs vanilla, tiny preset", "preset": "tiny", "num_pairs": 8, "seed": 1, "steps": "ddim5",
         "raters_per_pair": 5, "attention_checks": True},
        {"title": "The paper's survey", "preset": "imagenet128", "num_pairs": 200, "steps": "250",
         "raters_per_pair": 36},
    ]})

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
                     AfterValidator(_no_nul)] = Field(
        "Which image is better?", description="shown to raters and on the researcher pages")
    preset: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        None, description="preset name (GET /v1/presets); default: the server's default preset")
    num_pairs: Annotated[StrictInt, Field(ge=1, le=5000)] | None = Field(
        None, description="draw this many labels at random with the study seed (the paper: 200); "
                          "give either num_pairs or labels; default 200")
    labels: list[Label] | None = Field(
        None, min_length=1, max_length=5000, description="explicit labels (index or class name), one pair each")
    seed: Annotated[StrictInt, Field(ge=0, le=2**62)] | None = Field(
        None, description="pair i uses seed + i for both images; labels are drawn with it too; default random")
    method_a: Method = Field("robust", description="method A (the paper: robust classifier guidance)")
    scale_a: Scale | None = Field(None, description="guidance scale of method A; default the preset's (robust: 1.0)")
    method_b: Method = Field("vanilla", description="method B (the paper: vanilla classifier guidance)")
    scale_b: Scale | None = Field(None, description="guidance scale of method B; default the preset's "
                                                    "(vanilla: 0.5)")
    steps: StepsSpec | None = Field(None, description="respacing, as for generations; default the preset's")
    sampler: SamplerName | None = None
    raters_per_pair: Annotated[StrictInt, Field(ge=1, le=100000)] = Field(
        25, description="per-pair cap: a pair is shown to at most this many raters")
    pairs_per_rater: Annotated[StrictInt, Field(ge=1, le=100000)] | None = Field(
        None, description="per-rater cap on real pairs; default: every pair")
    question: Text = Field(DEFAULT_QUESTION)
    instructions: Text = Field(DEFAULT_INSTRUCTIONS)
    consent: Text = Field(DEFAULT_CONSENT)
    attention_checks: bool = Field(
        False, description="show each rater attention-check pairs: the same image on both sides, where "
                           "'Same' is the right answer")
    attention_checks_per_rater: Annotated[StrictInt, Field(ge=1, le=20)] = 2
    max_attention_failures: Annotated[StrictInt, Field(ge=0, le=20)] = Field(
        0, description="raters who fail more checks than this are excluded from the statistics")
    min_answer_ms: Annotated[StrictInt, Field(ge=0, le=600000)] = Field(
        800, description="answers faster than this are flagged too_fast")
    completion_code: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{4,64}$")] | None = Field(
        None, description="shown on the thank-you page (e.g. Prolific's completion code); default random")
    completion_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=500),
                              AfterValidator(_no_nul)] | None = Field(
        None, description="a link on the thank-you page back to the recruiting platform")


class GenerationProgress(BaseModel):
    jobs: int
    succeeded: int
    failed: int
    progress: float = Field(ge=0, le=1)


class PairStatus(BaseModel):
    pair_id: str
    ordinal: int
    label: int
    class_name: str
    seed: int
    attention_check: bool
    assigned: int
    answers: int
    a_left: int = Field(description="answers given with method A's image on the left")
    choices: dict[str, int]


class StudyLinks(BaseModel):
    self: str
    rater_url: str = Field(description="the link to give raters (append ?PROLIFIC_PID=... on Prolific)")
    researcher_page: str
    manifest: str
    votes_csv: str
    votes_json: str
    results: str
    report: str
    close: str


class StudyOut(BaseModel):
    id: str
    title: str
    status: Literal["generating", "open", "closed", "failed"]
    error: str | None
    preset: str
    method_a: str
    scale_a: float
    method_b: str
    scale_b: float
    steps: str
    sampler: str
    seed: int
    label_source: str
    num_pairs: int
    attention_check_pairs: int
    raters_per_pair: int
    pairs_per_rater: int
    attention_checks_per_rater: int
    max_attention_failures: int
    min_answer_ms: int
    question: str
    completion_code: str
    code_version: str
    generation: GenerationProgress
    raters: int
    raters_completed: int
    answers: int
    answers_wanted: int
    completion: float = Field(ge=0, le=1, description="answers on real pairs over raters_per_pair x num_pairs")
    flagged_too_fast: int
    failed_attention_raters: int
    manifest_sha256: str | None
    created_at: datetime
    opened_at: datetime | None
    closed_at: datetime | None
    links: StudyLinks
    pairs: list[PairStatus] | None = Field(None, description="per-pair counts (GET of one study only)")


class StudyList(BaseModel):
    items: list[StudyOut]
