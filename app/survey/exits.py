"""Every way a rater leaves a study, each with a code and, where the platform takes one, a link back.

A crowd worker who cannot take part (study full, closed, not open yet) or
stops early (declined consent, failed the attention checks, nothing left to
rate) must still be able to tell the platform what happened, or they are
left with no way to be paid or to return the study. So every outcome has a
code, shown on its page, and optionally a URL:

* **Prolific**: each code is a completion code the researcher registers in
  the study's completion paths, with an action (approve, request a return,
  screen out, manual review); the link back is
  ``https://app.prolific.com/submissions/complete?cc=CODE`` unless a URL is given.
* **MTurk**: the page submits the HIT to ``turkSubmitTo/mturk/externalSubmit``
  with the ``assignmentId``, the ``outcome`` and the ``code``.
* Otherwise the code, and a URL if the researcher gave one.

Codes not given are drawn at random when the study is created; all of them
are on the researcher page and in ``GET /v1/surveys/{id}``.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    title: str
    text: str           # may use {answered}
    prolific_action: str  # what the researcher should map the code to on Prolific (docs, researcher page)


OUTCOMES: dict[str, Outcome] = {
    "completed": Outcome("Thank you!", "You answered {answered} pairs. Your answers have been recorded.",
                         "approve"),
    "no_consent": Outcome("You chose not to take part",
                          "Nothing was recorded. Thank you for considering this study.",
                          "ask the participant to return the submission (no consent)"),
    "not_open": Outcome("Not open yet", "This study is being prepared and is not open yet. Please try again in "
                        "a few minutes, or return it on the platform.", "request a return"),
    "full": Outcome("Study full", "This study already has all the answers it needs. Thank you for your interest.",
                    "request a return"),
    "closed": Outcome("Study closed", "This study is closed and accepts no more answers. Thank you for your "
                      "interest.", "request a return"),
    "closed_midway": Outcome("Study closed", "This study closed while you were taking part. Your {answered} "
                             "answers were recorded. Thank you for taking part.", "manual review (partial work)"),
    "failed_checks": Outcome("Thank you", "This session has ended: the answers to the attention checks did not "
                             "match their instructions. Your answers have been recorded.",
                             "screen out, or reject under the platform's attention-check policy"),
    "no_pairs": Outcome("Thank you", "Other participants have already answered every pair that was left for "
                        "you, so there is nothing more to rate. Your {answered} answers were recorded.",
                        "approve, or manual review"),
}
OUTCOME_NAMES = tuple(OUTCOMES)
# Outcomes that end a rater's session for good (stored in survey_raters.outcome).
FINAL = ("completed", "failed_checks", "no_pairs")
PROLIFIC_RETURN = "https://app.prolific.com/submissions/complete?cc={code}"


def random_code() -> str:
    return secrets.token_hex(5).upper()


def resolve(platform: str, given: dict | None, completion_code: str | None,
            completion_url: str | None) -> tuple[str, str | None, dict[str, dict]]:
    """The study's codes and URLs from the request: (completion code, completion URL, the other exits).

    ``given`` maps outcomes to ``{"code": ..., "url": ...}`` (either may be missing);
    ``completion_code`` / ``completion_url`` are the older fields for "completed".
    Codes not given are random and distinct; on Prolific each URL defaults to its code's
    completion link.
    """
    given = {k: dict(v) for k, v in (given or {}).items()}
    done = given.pop("completed", {})
    code = done.get("code") or completion_code
    url = done.get("url") or completion_url
    used: set[str] = set()

    def fresh() -> str:
        while (c := random_code()) in used:
            pass
        return c

    code = code or fresh()
    used.add(code)
    exits: dict[str, dict] = {}
    for name in OUTCOME_NAMES[1:]:
        entry = given.get(name, {})
        c = entry.get("code") or fresh()
        used.add(c)
        exits[name] = {"code": c, "url": entry.get("url") or _default_url(platform, c)}
    return code, url or _default_url(platform, code), exits


def _default_url(platform: str, code: str) -> str | None:
    return PROLIFIC_RETURN.format(code=code) if platform == "prolific" else None


def exit_for(study, outcome: str) -> dict:
    """{"code", "url"} of ``outcome`` in ``study``."""
    if outcome == "completed":
        return {"code": study.completion_code, "url": study.completion_url}
    entry = (study.exit_codes or {}).get(outcome) or {}
    return {"code": entry.get("code"), "url": entry.get("url")}


def all_exits(study) -> dict[str, dict]:
    """Every outcome's code, URL, and the platform action it stands for (researcher page, API)."""
    return {name: {**exit_for(study, name), "action": OUTCOMES[name].prolific_action} for name in OUTCOME_NAMES}
