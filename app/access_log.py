"""What the access log keeps of survey traffic: neither the client address nor the link's parameters.

A rater's link carries their platform id (``PROLIFIC_PID``, ``workerId``) and
possibly their session token (``rs``); uvicorn's access log would write each
next to the client's IP address, contradicting a consent text that says no IP
address is recorded. This filter, on the ``uvicorn.access`` logger, rewrites
every line for a survey page (``/s/...``): the address becomes ``-`` and the
query string ``?...`` is dropped. Other paths are logged as uvicorn writes them.
"""
from __future__ import annotations

import logging

SURVEY_PREFIX = "/s/"
ACCESS_LOGGER = "uvicorn.access"


class SurveyPrivacyFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn: '%s - "%s %s HTTP/%s" %d' % (client, method, path with query, version, status)
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            path = args[2]
            if path.startswith(SURVEY_PREFIX):
                record.args = ("-", args[1], path.split("?", 1)[0], args[3], args[4])
        return True


def install() -> None:
    """Add the filter to uvicorn's access logger once (idempotent: create_app may run many times)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, SurveyPrivacyFilter) for f in logger.filters):
        logger.addFilter(SurveyPrivacyFilter())
