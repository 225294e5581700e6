"""Preference statistics of a pairwise survey: pure functions over plain data.

No web, database or torch imports: the CLI, the API and the report all call
:func:`compute_all` on a list of :class:`Vote` (or dict rows). Definitions and
tests are documented in docs/statistics.md.
"""
from app.stats.export import (
    stats_json,
    tidy_votes_csv,
    write_atomic,
    write_stats_json,
    write_votes_csv,
)
from app.stats.summary import DEFAULT_N_BOOT, DEFAULT_SEED, compute_all, jsonable
from app.stats.tables import DEFAULT_THRESHOLDS
from app.stats.votes import (
    Vote,
    VoteFormatError,
    parse_votes_csv,
    read_votes_csv,
    votes_from_rows,
)

__all__ = [
    "DEFAULT_N_BOOT", "DEFAULT_SEED", "DEFAULT_THRESHOLDS", "Vote", "VoteFormatError", "compute_all", "jsonable",
    "parse_votes_csv", "read_votes_csv", "stats_json", "tidy_votes_csv", "votes_from_rows", "write_atomic",
    "write_stats_json", "write_votes_csv",
]
