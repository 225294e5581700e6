"""Exports that never leave a half-written file: tidy votes CSV and the statistics JSON.

Every writer renders the whole content in memory first, writes it to a
temporary file in the destination's directory and renames it over the
destination (atomic on POSIX and Windows), so after an error the destination
is either absent or still holds its previous, complete content.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from app.stats.exclusions import apply_exclusions
from app.stats.votes import Vote
from model_core.files import atomic_write_text

TIDY_COLUMNS = ("study", "pair", "label", "class_name", "seed", "rater", "choice", "side_shown", "position",
                "response_time_ms", "timestamp", "excluded", "attention_check", "exclusion_reason")


def write_atomic(path: str | Path, text: str) -> Path:
    return atomic_write_text(path, text, durable=True)


def stats_json(stats: dict) -> str:
    # allow_nan=False: a NaN that slipped through is a bug to surface, not invalid JSON to ship.
    return json.dumps(stats, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def write_stats_json(path: str | Path, stats: dict) -> Path:
    return write_atomic(path, stats_json(stats))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def tidy_votes_csv(votes: Sequence[Vote], *, max_attention_failures: int = 0) -> str:
    """One row per vote, one column per variable.

    ``excluded`` is true for every vote the statistics leave out (flagged,
    attention-check pair, or a rater excluded for failed checks) and
    ``exclusion_reason`` says which; ``side_shown`` is the side of method A.
    The file reads back with :func:`app.stats.votes.read_votes_csv`.
    """
    reasons = apply_exclusions(votes, max_failures=max_attention_failures).reasons
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TIDY_COLUMNS)
    for v, why in zip(votes, reasons):
        writer.writerow([_cell(x) for x in (
            v.study_id, v.pair_id, v.label, v.class_name, v.seed, v.rater_id, v.choice, v.robust_side,
            v.position, v.response_ms, v.created_at, why is not None, v.is_attention_check, why)])
    return buf.getvalue()


def write_votes_csv(path: str | Path, votes: Sequence[Vote], *, max_attention_failures: int = 0) -> Path:
    return write_atomic(path, tidy_votes_csv(votes, max_attention_failures=max_attention_failures))
