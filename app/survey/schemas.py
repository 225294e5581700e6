"""Request and response bodies of the survey API (they generate its OpenAPI schema)."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    model_validator,
)

from app.schemas import Label, SamplerName, StepsSpec
from app.survey.exits import OUTCOME_NAMES
from app.survey.quality import FLAG_NAMES
from model_core.designs import DESIGNS
from worker.survey_models import CHECK_KINDS, PLATFORMS

DEFAULT_QUESTION = "Which image is more realistic, and more aligned to the description?"
DEFAULT_INSTRUCTIONS = (
    "You will see pairs of images. Each pair was made for the description shown above the images. "
    "For each pair, choose the image that is more realistic and more aligned to the description: "
    "Left or Right. If you see no difference, choose Same. Apart from the attention checks described "
    "below, there are no right or wrong answers; please go with your honest impression. On a keyboard, "
    "use the left arrow (or 1) for Left, the right arrow (or 2) for Right and the down arrow (or 0) for Same."
)
DEFAULT_CONSENT = (
    "This is a research study of how people judge generated images. Taking part is voluntary and you may "
    "stop at any time by closing the page.\n\n"
    "What we record: your answers, which image was on which side, how long each answer took and whether the "
    "images had loaded, the times you started and finished, the participant id the recruiting platform passed "
    "to us (your Prolific ID, or your MTurk worker, assignment and HIT ids; otherwise a random id), and your "
    "browser's user-agent string (its name, version and operating system), which helps us spot automated "
    "answers. We record no name, e-mail or IP address: the server's access log keeps neither the address nor "
    "the link parameters of the survey's pages.\n\n"
    "Answers are analysed and published only in aggregate. To have your answers deleted, send the researcher "
    "your participant id through the recruiting platform."
)

def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL characters; refuse them here rather than fail on insert.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000),
                 AfterValidator(_no_nul)]
Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{4,64}$")]
ReturnUrl = Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=500), AfterValidator(_no_nul)]
Outcome = Literal[OUTCOME_NAMES]  # type: ignore[valid-type]
FlagName = Literal[FLAG_NAMES]  # type: ignore[valid-type]
Share = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
Timeout = Annotated[StrictInt, Field(ge=1, le=7 * 24 * 3600)]


class ExitSpec(BaseModel):
    """What a rater leaving with one outcome is given: a code, a link back to the platform, or both."""
    model_config = ConfigDict(extra="forbid", strict=True)

    code: Code | None = Field(None, description="shown on the page (register it on the platform); default random")
    url: ReturnUrl | None = Field(None, description="a link back to the platform; on Prolific default "
                                                    "https://app.prolific.com/submissions/complete?cc=CODE")
Method = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Scale = Annotated[float, Field(allow_inf_nan=False, description="positive guidance scale")]


ArmName = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, pattern=r"^[a-z][a-z0-9_.@-]{0,63}$")]


class ArmSpec(BaseModel):
    """One arm of a multi-arm study: a guidance method of the preset at a scale, optionally its own steps/sampler."""
    model_config = ConfigDict(extra="forbid", strict=True)

    method: Method = Field(description="a method of the preset (GET /v1/presets), 'none' for no guidance")
    scale: Scale | None = Field(None, description="guidance scale; default the preset's for the method")
    name: ArmName | None = Field(None, description="how votes, exports and the report name the arm; default the "
                                                   "method, or method@scale when two arms share a method "
                                                   "('unguided' for 'none')")
    steps: StepsSpec | None = Field(None, description="this arm's respacing; default the study's")
    sampler: SamplerName | None = Field(None, description="this arm's sampler; default the study's")


Weight = Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]


def _whole(value):
    # JSON has one number type: 5.0 is the integer 5 to a JSON Schema validator (and to a client), so it is
    # accepted as one; "5", 5.5 and true stay errors.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def whole(ge: int, le: int):
    """An integer field in [ge, le] that also takes 5.0 for 5 (the bounds first, so the schema says minimum/maximum)."""
    return Annotated[StrictInt, Field(ge=ge, le=le), BeforeValidator(_whole)]


class MachinePilotSpec(BaseModel):
    """The machine-rater pilot (docs/pilot.md): the judge answers every real pair, simulated raters around it."""
    model_config = ConfigDict(extra="forbid", strict=True)

    raters: whole(1, 100) = Field(5, description="simulated machine raters per pair")
    noise: Weight = Field(1.0, description="scale of each simulated rater's logistic noise on u_A - u_B")
    same_margin: Weight = Field(0.5, description="|u_A - u_B| below this is answered 'same'")
    realism_weight: Weight = Field(1.0, description="weight of log realism against log p(y|x) in the utility")
    k: whole(1, 50) = Field(3, description="neighbours of the realism score")
    seed: whole(0, 2**31 - 1) = Field(0, description="seeds the simulated raters")


class StudyCreate(BaseModel):
    # strict: numbers and booleans must be JSON numbers and booleans ("attention_checks": "yes" is an error).
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"title": "Robust vs vanilla, tiny preset", "preset": "tiny", "num_pairs": 8, "seed": 1, "steps": "ddim5",
         "raters_per_pair": 5, "attention_checks": True},
        {"title": "The paper's survey", "preset": "imagenet128", "num_pairs": 200, "steps": "250",
         "raters_per_pair": 36},
        {"title": "Three arms", "preset": "tiny", "num_pairs": 8, "seed": 1, "steps": "ddim5", "raters_per_pair": 5,
         "arms": [{"method": "robust", "scale": 1.0}, {"method": "vanilla", "scale": 0.5},
                  {"method": "robust", "scale": 3.0, "name": "robust-strong"}], "design": "all_pairs"},
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
    arms: list[ArmSpec] | None = Field(
        None, min_length=2, max_length=12,
        description="instead of method_a/method_b: the arms to compare (K >= 2); every item (label and seed) gets "
                    "an image of every arm from the same starting noise, and raters see two arms at a time")
    design: Literal[DESIGNS] | None = Field(  # type: ignore[valid-type]
        None, description="with arms: which arm pairs each item is shown with: 'all_pairs' (default), 'reference' "
                          "(each arm against reference_arm) or 'balanced_incomplete' (pairs_per_item of the arm "
                          "pairs per item, each arm pair on equally many items)")
    reference_arm: ArmName | None = Field(None, description="the reference design's arm (a name in arms); default "
                                                            "the first arm")
    pairs_per_item: Annotated[StrictInt, Field(ge=1, le=66)] | None = Field(
        None, description="the balanced incomplete design's arm pairs per item; default K // 2")
    raters_per_pair: Annotated[StrictInt, Field(ge=1, le=100000)] = Field(
        25, description="per-pair cap: a pair is shown to at most this many raters")
    pairs_per_rater: Annotated[StrictInt, Field(ge=1, le=100000)] | None = Field(
        None, description="per-rater cap on real pairs; default: every pair")
    question: Text = Field(DEFAULT_QUESTION)
    instructions: Text = Field(DEFAULT_INSTRUCTIONS)
    consent: Text = Field(DEFAULT_CONSENT)
    attention_checks: bool = Field(
        False, description="show each rater attention-check pairs (see attention_check_kind)")
    attention_checks_per_rater: Annotated[StrictInt, Field(ge=1, le=20)] = 2
    max_attention_failures: Annotated[StrictInt, Field(ge=0, le=20)] = Field(
        0, description="raters who fail more checks than this are excluded from the statistics")
    min_answer_ms: Annotated[StrictInt, Field(ge=0, le=600000)] = Field(
        800, description="answers faster than this are flagged too_fast")
    completion_code: Code | None = Field(
        None, description="shown on the thank-you page (e.g. Prolific's completion code); default random "
                          "(the same as exits.completed.code)")
    completion_url: ReturnUrl | None = Field(
        None, description="a link on the thank-you page back to the recruiting platform (exits.completed.url)")
    platform: Literal[PLATFORMS] = Field(  # type: ignore[valid-type]
        "none", description="where raters come from: 'prolific' (ids PROLIFIC_PID, STUDY_ID, SESSION_ID; exit "
                            "links to Prolific's completion URL), 'mturk' (workerId, assignmentId, hitId, "
                            "turkSubmitTo; the pages may be framed by the MTurk hosts and submit the HIT) or "
                            "'none'")
    exits: dict[Outcome, ExitSpec] | None = Field(
        None, description="a code and/or URL per way out: " + ", ".join(OUTCOME_NAMES)
                          + "; codes not given are random")
    completion_redirect: bool = Field(
        False, description="send raters straight to an exit's URL instead of showing its page")
    attention_check_kind: Literal[CHECK_KINDS] = Field(  # type: ignore[valid-type]
        "instructed", description="'instructed': a pair of images from outside the study with an instruction "
                                  "to choose Left (or Right); 'identical': one image from outside the study on "
                                  "both sides, where Same passes")
    assignment_timeout_seconds: Timeout = Field(
        3600, description="a pair left unanswered this long goes back to the pool for other raters")
    flag_same_share: Share = Field(0.8, description="flag raters answering Same to at least this share of pairs")
    flag_fast_share: Share = Field(0.25, description="flag raters with at least this share of too-fast answers")
    flag_min_answers: Annotated[StrictInt, Field(ge=1, le=100000)] = Field(
        5, description="flags need at least this many answers")
    exclude_flags: list[FlagName] = Field(
        [], description="flags that also exclude a rater from the statistics when they finish (default: none; "
                        "failed attention checks always exclude)")
    machine_pilot: MachinePilotSpec | None = Field(
        None, description="run the machine-rater pilot on the study's pairs once it opens: a judge network answers "
                          "every pair as simulated raters, stored apart from human votes (GET .../machine-votes); "
                          "only presets with a judge network (the digit presets)")

    @model_validator(mode="after")
    def _one_completion(self):
        done = (self.exits or {}).get("completed")
        if done is not None:
            for name in ("code", "url"):
                old, new = getattr(self, f"completion_{name}"), getattr(done, name)
                if old is not None and new is not None and old != new:
                    raise ValueError(f"completion_{name} and exits.completed.{name} differ; give one of them")
        return self


class RaterExclusion(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(_no_nul)] | None = (
        Field(None, description="why (kept with the rater, shown in the per-rater table)"))


class StudyUpdate(BaseModel):
    """Changes to a study after it opened: caps raised, the time-out. Each is logged in its amendments."""
    model_config = ConfigDict(extra="forbid", strict=True)

    raters_per_pair: Annotated[StrictInt, Field(ge=1, le=100000)] | None = Field(
        None, description="raise the per-pair cap (add raters); it cannot be lowered")
    pairs_per_rater: Annotated[StrictInt, Field(ge=1, le=100000)] | None = Field(
        None, description="raise the per-rater cap for raters who start from now on; it cannot be lowered")
    assignment_timeout_seconds: Timeout | None = None


class ExitOut(BaseModel):
    code: str | None
    url: str | None
    action: str


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
    live: int = Field(description="assignments holding a slot now (the per-pair cap counts these)")
    choices: dict[str, int] | None = Field(
        description="answers per choice (for a check: passed, failed); null while the study collects unless "
                    "asked for (?preferences=true)")
    check_answer: str | None = Field(None, description="for an attention check: the answer that passes it")
    arm_a: str | None = Field(None, description="a multi-arm study: the pair's first arm (a_left counts it)")
    arm_b: str | None = Field(None, description="a multi-arm study: the pair's second arm")


class ArmPairStatus(BaseModel):
    arms: list[str] = Field(description="the two arms (the first is 'A' of a_left and of the sides)")
    n_items: int = Field(description="items (label and seed) shown with this arm pair")
    assigned: int
    answers: int
    a_left: int
    min_answers: int | None = Field(description="fewest answers of one item with this arm pair")
    max_answers: int | None
    choices: dict[str, int] | None


class StudyLinks(BaseModel):
    self: str
    rater_url: str = Field(description="the link to give raters (append ?PROLIFIC_PID=... on Prolific)")
    researcher_page: str
    manifest: str
    votes_csv: str
    votes_json: str
    results: str
    report: str
    table2_csv: str
    table2_latex: str
    raters_csv: str
    raters_json: str
    close: str
    reopen: str
    machine_votes: str
    machine_votes_csv: str
    machine_results: str
    machine_report: str


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
    arms: list[dict] | None = Field(None, description="a multi-arm study's arms (name, method, scale, steps, sampler); "
                                                      "null for a study of method_a against method_b")
    design: str | None = None
    reference_arm: str | None = None
    pairs_per_item: int | None = None
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
    platform: str
    exits: dict[str, ExitOut] = Field(description="every way out with its code, URL and the platform action "
                                                  "it stands for")
    completion_redirect: bool
    attention_check_kind: str
    assignment_timeout_seconds: int
    flag_same_share: float
    flag_fast_share: float
    flag_min_answers: int
    exclude_flags: list[str]
    machine_pilot: dict | None = Field(None, description="the machine-rater pilot asked for at creation")
    code_version: str
    generation: GenerationProgress
    raters: int = Field(description="raters who consented (recruited)")
    raters_completed: int = Field(description="raters who finished and are not excluded")
    raters_excluded: int
    raters_flagged: int
    answers: int = Field(description="usable answers: real pairs, raters not excluded")
    answers_all: int = Field(description="every answer on a real pair, excluded raters' too")
    answers_wanted: int
    completion: float = Field(ge=0, le=1, description="usable answers over raters_per_pair x num_pairs")
    flagged_too_fast: int
    failed_attention_raters: int
    amendments: list[dict] = Field(description="changes made after the manifest was frozen")
    manifest_sha256: str | None
    created_at: datetime
    opened_at: datetime | None
    closed_at: datetime | None
    links: StudyLinks
    pairs: list[PairStatus] | None = Field(None, description="per-pair counts (GET of one study only)")
    arm_pairs: list[ArmPairStatus] | None = Field(None, description="a multi-arm study's counts per arm pair (GET of "
                                                                    "one study only)")


class MachineVotesOut(BaseModel):
    """A study's machine-rater pilot: its latest job and how many machine votes are stored."""
    study_id: str
    job_id: str | None
    status: Literal["none", "queued", "running", "succeeded", "failed", "canceled"]
    progress: float = Field(ge=0, le=1)
    progress_step: int
    progress_total: int
    error: str | None
    settings: dict | None
    votes: int = Field(description="machine votes stored (real pairs x machine raters when done)")
    result: dict | None = Field(None, description="per arm: label accuracy, share inside the real manifold, mean "
                                                  "utility; the judge's file and sha256, real data, code version")
    note: str = Field(description="what these votes are: a proxy, never part of the human statistics")


class StudyList(BaseModel):
    items: list[StudyOut]
