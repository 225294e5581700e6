"""Who a rater is on their recruiting platform, read from the study link and carried in every link after it.

* **Prolific** appends ``PROLIFIC_PID``, ``STUDY_ID`` and ``SESSION_ID``.
* **MTurk** (an ExternalQuestion) appends ``workerId``, ``assignmentId``,
  ``hitId`` and ``turkSubmitTo``; while a worker previews the HIT,
  ``assignmentId`` is ``ASSIGNMENT_ID_NOT_AVAILABLE``.
* Anyone else is anonymous: a random id in the rater's signed cookie.

The ids go into every internal link and form of the survey (``params``), so
a participant who loses the cookie (another device, cookies blocked, a
third-party iframe) is found again by their platform id instead of becoming
a second rater.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# Prolific's ids are 24 hex characters; MTurk's are upper-case alphanumerics. Anything else
# (spaces, markup, very long strings) is refused rather than stored.
PARTICIPANT_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
PROLIFIC_PARAMS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")
MTURK_PARAMS = ("workerId", "assignmentId", "hitId", "turkSubmitTo")
PARAMS = PROLIFIC_PARAMS + MTURK_PARAMS
MTURK_PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE"


class ParticipantError(ValueError):
    """A malformed crowd-platform id in the study link."""


@dataclass(frozen=True)
class Participant:
    source: str = "anonymous"              # "prolific", "mturk" or "anonymous"
    pid: str | None = None                 # PROLIFIC_PID or workerId
    platform_study_id: str | None = None   # STUDY_ID or hitId
    platform_session_id: str | None = None  # SESSION_ID or assignmentId
    submit_to: str | None = None           # MTurk: the turkSubmitTo origin
    preview: bool = False                  # MTurk: the worker has not accepted the HIT yet

    @property
    def external_id(self) -> str | None:
        return f"{self.source}:{self.pid}" if self.pid else None

    @property
    def platform_name(self) -> str | None:
        return {"prolific": "Prolific", "mturk": "Mechanical Turk"}.get(self.source)

    @classmethod
    def from_params(cls, values: Mapping[str, str | None], mturk_hosts: tuple[str, ...] = ()) -> Participant:
        """From the link's query (or a form): raises ``ParticipantError`` naming a malformed id."""
        clean: dict[str, str | None] = {}
        for name in PARAMS:
            value = (values.get(name) or "").strip() or None
            if value is not None and name != "turkSubmitTo" and not PARTICIPANT_ID.match(value):
                raise ParticipantError(f"{name} in the study link is not a valid id (letters, digits and _.:@- "
                                       "only, at most 128 characters); please use the link the platform gave you")
            clean[name] = value
        if clean["PROLIFIC_PID"] and clean["workerId"]:
            raise ParticipantError("the study link carries both PROLIFIC_PID and workerId; please use the link "
                                   "the platform gave you")
        if clean["PROLIFIC_PID"]:
            return cls("prolific", clean["PROLIFIC_PID"], clean["STUDY_ID"], clean["SESSION_ID"])
        assignment = clean["assignmentId"]
        if clean["workerId"] or assignment:
            submit_to = clean["turkSubmitTo"]
            if submit_to is not None:
                submit_to = submit_to.rstrip("/").lower()
                if submit_to not in mturk_hosts:
                    raise ParticipantError(f"turkSubmitTo {submit_to[:80]!r} is not an MTurk host this server "
                                           "submits to (RGUIDE_MTURK_HOSTS)")
            preview = assignment == MTURK_PREVIEW
            return cls("mturk", clean["workerId"], clean["hitId"], None if preview else assignment, submit_to,
                       preview=preview)
        return cls()

    @classmethod
    def from_rater(cls, rater) -> Participant:
        source = rater.source if rater.source in ("prolific", "mturk") else "anonymous"
        if source == "anonymous":
            return cls()
        pid = rater.external_id.split(":", 1)[1]
        return cls(source, pid, rater.platform_study_id, rater.platform_session_id, rater.submit_to)

    def params(self) -> dict[str, str]:
        """The query parameters that identify this participant in a link."""
        if self.source == "prolific":
            names, values = PROLIFIC_PARAMS, (self.pid, self.platform_study_id, self.platform_session_id)
        elif self.source == "mturk":
            assignment = MTURK_PREVIEW if self.preview else self.platform_session_id
            names, values = MTURK_PARAMS, (self.pid, assignment, self.platform_study_id, self.submit_to)
        else:
            return {}
        return {n: v for n, v in zip(names, values) if v}

    @property
    def can_submit_to_mturk(self) -> bool:
        return self.source == "mturk" and bool(self.submit_to and self.platform_session_id) and not self.preview

    @property
    def mturk_submit_url(self) -> str | None:
        return f"{self.submit_to}/mturk/externalSubmit" if self.can_submit_to_mturk else None
