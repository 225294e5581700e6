"""Votes as plain data, and the CSV reader that refuses anything malformed.

A vote is one rater's answer about one pair. ``choice`` is the name of
method A (default ``robust``), of method B (default ``vanilla``) or ``same``.
``robust_side`` is the side ('left' or 'right') on which method A's image was
shown to this rater; it is named for the default method because that is what
the survey stores, but it always means "the side of method A".

The reader is all-or-nothing: it either returns every vote of a well-formed
file or raises :class:`VoteFormatError`, whose message names the data row
(1-based, header not counted), the physical line of the file and the column.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

SAME = "same"
DEFAULT_A = "robust"
DEFAULT_B = "vanilla"
SIDES = ("left", "right")
# Names that would collide with the keys of the statistics output.
RESERVED_NAMES = (SAME, "none")


@dataclass(frozen=True)
class Vote:
    pair_id: str
    rater_id: str
    choice: str
    study_id: str | None = None
    label: int | None = None
    class_name: str | None = None
    seed: int | None = None
    robust_side: str | None = None
    position: int | None = None
    response_ms: float | None = None
    created_at: str | None = None
    is_attention_check: bool = False
    excluded: bool = False
    # For an attention-check vote, whether it passed; None: judge by the classic rule (an
    # identical-image check, where only "same" passes). The survey's instructed checks pass on a side.
    attention_passed: bool | None = None
    # A study with more than two arms: the two arms this pair shows (``choice`` then names one of
    # them, and ``robust_side`` is the side of ``arm_a``). None in a two-arm file.
    arm_a: str | None = None
    arm_b: str | None = None


VOTE_FIELDS = tuple(f.name for f in fields(Vote))

# The tidy export (app.stats.export) uses shorter, analysis-friendly column
# names; accepting them here means an export can be read back unchanged.
COLUMN_ALIASES = {
    "study": "study_id",
    "pair": "pair_id",
    "rater": "rater_id",
    "side_shown": "robust_side",
    "response_time_ms": "response_ms",
    "timestamp": "created_at",
    "attention_check": "is_attention_check",
}
REQUIRED = ("pair_id", "rater_id", "choice")
_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n", ""}


class VoteFormatError(ValueError):
    """A votes file (or list of vote rows) that cannot be used as it is.

    ``row`` is the 1-based data row (None for problems with the file as a
    whole), ``line`` the physical line of the file where that row starts,
    ``column`` the offending column (None when no single column is at fault).
    """

    def __init__(self, message: str, *, row: int | None = None, line: int | None = None,
                 column: str | None = None, source: str | None = None):
        where = []
        if row is not None:
            where.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
        elif line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = (f"{source}: " if source else "") + (", ".join(where) + ": " if where else "")
        super().__init__(prefix + message)
        self.row, self.line, self.column, self.source = row, line, column, source


def check_methods(method_a: str, method_b: str) -> tuple[str, str]:
    """Validate a pair of method names and return them lower-cased."""
    a, b = str(method_a).strip().lower(), str(method_b).strip().lower()
    if not a or not b:
        raise ValueError("method names must not be empty")
    if a == b:
        raise ValueError(f"methods A and B must differ (both are {a!r})")
    for name in (a, b):
        if name in RESERVED_NAMES:
            raise ValueError(f"{name!r} cannot be a method name: it is reserved for the other columns")
    return a, b


def _parse_int(text: str) -> int | None:
    text = text.strip()
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        # Spreadsheets write integers as "12.0"; accept those but nothing fractional.
        value = float(text)
        if not math.isfinite(value) or value != int(value):
            raise
        return int(value)


def _parse_ms(text: str) -> float | None:
    text = text.strip()
    if text == "":
        return None
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(text)


def _parse_side(text: str) -> str | None:
    low = text.strip().lower()
    if low == "":
        return None
    if low not in SIDES:
        raise ValueError(text)
    return low


def _parse_opt_bool(text: str) -> bool | None:
    return None if text.strip() == "" else _parse_bool(text)


def _opt_str(text: str) -> str | None:
    text = text.strip()
    return text or None


def _opt_arm(text: str) -> str | None:
    name = text.strip().lower()
    if name in RESERVED_NAMES:
        raise ValueError(text)
    return name or None


_PARSERS: dict[str, tuple[Any, str]] = {
    "study_id": (_opt_str, "text"),
    "label": (_parse_int, "an integer"),
    "class_name": (_opt_str, "text"),
    "seed": (_parse_int, "an integer"),
    "robust_side": (_parse_side, "'left', 'right' or empty"),
    "position": (_parse_int, "an integer"),
    "response_ms": (_parse_ms, "a finite number of milliseconds >= 0"),
    "created_at": (_opt_str, "text"),
    "is_attention_check": (_parse_bool, "true/false, yes/no, 1/0 or empty"),
    "excluded": (_parse_bool, "true/false, yes/no, 1/0 or empty"),
    "attention_passed": (_parse_opt_bool, "true/false, yes/no, 1/0 or empty"),
    "arm_a": (_opt_arm, "an arm name (lower case) or empty"),
    "arm_b": (_opt_arm, "an arm name (lower case) or empty"),
}


class _Checker:
    """Cross-row checks shared by the CSV reader and :func:`votes_from_rows`."""

    PAIR_CONSTANT = ("label", "class_name", "seed", "is_attention_check", "arm_a", "arm_b")

    def __init__(self, source: str | None):
        self.source = source
        self.seen: dict[tuple[str, str], int] = {}
        self.pair_meta: dict[str, tuple[int, dict[str, Any]]] = {}
        self.study: tuple[int, str] | None = None

    def check(self, vote: Vote, row: int, line: int | None) -> None:
        key = (vote.rater_id, vote.pair_id)
        if key in self.seen:
            raise VoteFormatError(
                f"rater {vote.rater_id!r} already answered pair {vote.pair_id!r} in row {self.seen[key]}; "
                "each rater answers each pair at most once", row=row, line=line, column="rater_id",
                source=self.source)
        self.seen[key] = row
        meta = {name: getattr(vote, name) for name in self.PAIR_CONSTANT}
        if vote.pair_id in self.pair_meta:
            first_row, first = self.pair_meta[vote.pair_id]
            for name in self.PAIR_CONSTANT:
                if meta[name] != first[name]:
                    raise VoteFormatError(
                        f"pair {vote.pair_id!r} has {name} {meta[name]!r} here but {first[name]!r} in row "
                        f"{first_row}; a pair's {name} must be the same in every row",
                        row=row, line=line, column=name, source=self.source)
        else:
            self.pair_meta[vote.pair_id] = (row, meta)
        if vote.study_id is not None:
            if self.study is None:
                self.study = (row, vote.study_id)
            elif self.study[1] != vote.study_id:
                raise VoteFormatError(
                    f"study {vote.study_id!r} here but {self.study[1]!r} in row {self.study[0]}; "
                    "statistics are per study, so give one study's votes at a time",
                    row=row, line=line, column="study_id", source=self.source)


def _canonical_choice(raw: str, methods: tuple[str, str]) -> str:
    low = raw.strip().lower()
    if low in methods or low == SAME:
        return low
    raise ValueError(raw)


def _build_vote(values: Mapping[str, str], methods: tuple[str, str], row: int, line: int | None,
                source: str | None) -> Vote:
    kwargs: dict[str, Any] = {}
    for name in ("pair_id", "rater_id"):
        text = values[name].strip()
        if not text:
            raise VoteFormatError("is empty; every vote needs a pair and a rater", row=row, line=line,
                                  column=name, source=source)
        kwargs[name] = text
    for name, (parse, expected) in _PARSERS.items():
        if name not in values:
            continue
        try:
            kwargs[name] = parse(values[name])
        except (ValueError, OverflowError):
            raise VoteFormatError(f"{values[name]!r} is not {expected}", row=row, line=line, column=name,
                                  source=source) from None
    arms = (kwargs.get("arm_a"), kwargs.get("arm_b"))
    if (arms[0] is None) != (arms[1] is None):
        missing = "arm_b" if arms[1] is None else "arm_a"
        raise VoteFormatError("a pair of a multi-arm study names both of its arms (arm_a and arm_b)", row=row,
                              line=line, column=missing, source=source)
    if arms[0] is not None and arms[0] == arms[1]:
        raise VoteFormatError(f"arm_a and arm_b are both {arms[0]!r}; a pair shows two different arms", row=row,
                              line=line, column="arm_b", source=source)
    # A multi-arm vote chooses one of its own pair's arms; a two-arm vote one of the two methods.
    allowed = arms if arms[0] is not None else methods
    try:
        kwargs["choice"] = _canonical_choice(values["choice"], allowed)
    except ValueError:
        raise VoteFormatError(f"unknown choice {values['choice']!r}; expected one of "
                              f"{allowed[0]}, {allowed[1]}, {SAME}", row=row, line=line, column="choice",
                              source=source) from None
    return Vote(**kwargs)


def _map_header(header: list[str], line: int, source: str | None) -> list[str | None]:
    """Header cells -> vote field names (None for columns we do not use)."""
    mapped: list[str | None] = []
    where: dict[str, str] = {}
    for cell in header:
        name = cell.strip().lower()
        field = COLUMN_ALIASES.get(name, name)
        if field not in VOTE_FIELDS:
            mapped.append(None)
            continue
        if field in where:
            raise VoteFormatError(f"header: columns {where[field]!r} and {cell.strip()!r} both give {field}; "
                                  "keep one", line=line, column=cell.strip(), source=source)
        where[field] = cell.strip()
        mapped.append(field)
    missing = [name for name in REQUIRED if name not in where]
    if missing:
        raise VoteFormatError(
            f"header: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(found: {', '.join(h.strip() for h in header) or 'nothing'}); a votes file needs at least "
            f"{','.join(REQUIRED)}", line=line, column=missing[0], source=source)
    return mapped


MAX_LINE_CHARS = 64 * 1024  # a vote is a few hundred characters; a longer line is not a votes file


def _bounded_lines(fh, source: str | None) -> Iterator[str]:
    """The lines of a text or binary stream, refusing one longer than MAX_LINE_CHARS before it is read whole.

    So a file of any size is parsed in memory proportional to its votes, not
    to its longest line (a 1 GB line once took 7 GB before being refused).
    Bytes are decoded line by line, so an encoding error names its line.
    """
    number = 0
    while True:
        line = fh.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise VoteFormatError(f"line {number} is longer than {MAX_LINE_CHARS} characters; this is not a "
                                  "votes file", line=number, source=source)
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                raise VoteFormatError(f"line {number} is not UTF-8 text", source=source) from None
            if number == 1:
                line = line.removeprefix("\ufeff")
        yield line


def parse_votes_csv(text: str, *, method_a: str = DEFAULT_A, method_b: str = DEFAULT_B,
                    source: str | None = None) -> list[Vote]:
    """Parse CSV text into votes, or raise :class:`VoteFormatError` naming the row, line and column."""
    # Spreadsheets save UTF-8 with a byte-order mark.
    return parse_votes_lines(io.StringIO(text.removeprefix("\ufeff"), newline=""), method_a=method_a,
                             method_b=method_b, source=source)


def parse_votes_lines(fh, *, method_a: str = DEFAULT_A, method_b: str = DEFAULT_B,
                      source: str | None = None) -> list[Vote]:
    """Parse votes from a binary stream, or a text stream opened with ``newline=""`` (see :func:`parse_votes_csv`)."""
    methods = check_methods(method_a, method_b)
    reader = csv.reader(_bounded_lines(fh, source), strict=True)
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)
        if header is None:
            raise VoteFormatError(f"the file is empty; expected a header with at least {','.join(REQUIRED)}",
                                  source=source)
        mapped = _map_header(header, reader.line_num, source)
        checker = _Checker(source)
        votes: list[Vote] = []
        row = 0
        last_line = reader.line_num
        for cells in reader:
            line = last_line + 1  # where this record starts: a quoted field may span lines
            last_line = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            row += 1
            if len(cells) != len(header):
                raise VoteFormatError(f"has {len(cells)} fields but the header has {len(header)}", row=row,
                                      line=line, source=source)
            values = {field: cell for field, cell in zip(mapped, cells) if field is not None}
            vote = _build_vote(values, methods, row, line, source)
            checker.check(vote, row, line)
            votes.append(vote)
    except csv.Error as exc:
        raise VoteFormatError(f"not valid CSV: {exc}", row=None, line=reader.line_num, source=source,
                              column=None) from None
    if not votes:
        raise VoteFormatError("the file has a header but no votes", source=source)
    return votes


def read_votes_csv(path: str | Path, *, method_a: str = DEFAULT_A, method_b: str = DEFAULT_B) -> list[Vote]:
    """Read a votes CSV file; see :func:`parse_votes_csv`."""
    path = Path(path)
    with open(path, "rb") as fh:  # streamed: never the whole file in memory
        return parse_votes_lines(fh, method_a=method_a, method_b=method_b, source=str(path))


def votes_from_rows(rows: Iterable[Mapping[str, Any] | Vote], *, method_a: str = DEFAULT_A,
                    method_b: str = DEFAULT_B) -> list[Vote]:
    """Validate already-typed rows (dicts such as database rows, or Votes) with the CSV reader's rules.

    Values are converted to text and parsed exactly as a CSV cell would be, so a
    database export and a CSV file are held to the same checks.
    """
    methods = check_methods(method_a, method_b)
    checker = _Checker(None)
    votes = []
    for row, item in enumerate(rows, start=1):
        raw = {f: getattr(item, f) for f in VOTE_FIELDS} if isinstance(item, Vote) else dict(item)
        data = {COLUMN_ALIASES.get(key, key): value for key, value in raw.items()}
        values = {field: "" if value is None else str(value)
                  for field, value in data.items() if field in VOTE_FIELDS}
        missing = [name for name in REQUIRED if name not in values]
        if missing:
            raise VoteFormatError(f"missing field {missing[0]}", row=row, column=missing[0])
        vote = _build_vote(values, methods, row, None, None)
        # Keep integer ids (database keys) as integers; the checks above saw their text form.
        ids = {name: data[name] for name in ("pair_id", "rater_id")
               if isinstance(data.get(name), int) and not isinstance(data.get(name), bool)}
        if ids:
            vote = replace(vote, **ids)
        checker.check(vote, row, None)
        votes.append(vote)
    return votes
