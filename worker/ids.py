"""The one format of every row id the service hands out: 32 lowercase hex digits.

Job ids are uuid4 hex, image ids a sha256 prefix, survey rows uuid4 hex. A
value of any other shape (a NUL byte, which PostgreSQL refuses in text, a
very long string, a guess of another format) names no row, so lookups
answer "not found" before any SQL runs.
"""
from __future__ import annotations

import re
import uuid

ROW_ID = re.compile(r"[0-9a-f]{32}")


def new_id() -> str:
    return uuid.uuid4().hex


def is_row_id(value: object) -> bool:
    return isinstance(value, str) and ROW_ID.fullmatch(value) is not None
