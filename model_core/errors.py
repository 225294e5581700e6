"""The core's errors whose message is meant for the person who gave the input (torch-free).

A file that cannot be read as weights, a checkpoint for another
architecture, a missing weights file: the command line prints the message
on one line and exits 2 instead of showing a traceback, and the service
reports it as the job's error.

Errors about a setting name it the way the core does: config fields
(``data``, ``total_steps``, ``feature_weights``, ``real_data``), arguments of
its entry points, environment variables. The core never knows how a front
end spells them (``rguide`` flags, API fields, a Celery task's keys). A
:class:`SettingError` keeps its message as a template in which ``{name}``
marks each setting it names; ``str(exc)`` spells them as the core does, and
``exc.render(names)`` as the caller does::

    err = SettingError("real_data", "give {real_data} (a .npz file or a class folder)")
    str(err)                              # "give real_data (a .npz file or a class folder)"
    err.render({"real_data": "--real"})   # "give --real (a .npz file or a class folder)"

Only the declared settings are replaced, so braces elsewhere in a message
(a dict, a path) are left alone.
"""
from __future__ import annotations

import re
from typing import Mapping

_MARK = re.compile(r"\{(\w+)\}")


class InputError(Exception):
    """Something the user supplied is wrong, and the message says what and how to fix it."""


class SettingError(InputError, ValueError):
    """A setting is missing or wrong; ``settings`` names it (first) and any other the message mentions."""

    def __init__(self, setting: str, message: str, *, also: tuple[str, ...] = ()):
        self.settings: tuple[str, ...] = (setting, *also)
        self.template = message
        super().__init__(self.render())

    @property
    def setting(self) -> str:
        return self.settings[0]

    def render(self, names: Mapping[str, str] | None = None) -> str:
        """The message with each setting spelled as ``names`` says (its own name where ``names`` has none)."""
        names = names or {}
        return _MARK.sub(lambda m: names.get(m[1], m[1]) if m[1] in self.settings else m[0], self.template)

    def __reduce__(self):
        return (_rebuild, (type(self), self.template, self.settings))


def _rebuild(cls, template: str, settings: tuple[str, ...]) -> SettingError:
    return cls(settings[0], template, also=tuple(settings[1:]))


def message(exc: BaseException, names: Mapping[str, str] | None = None) -> str:
    """``exc``'s message for a front end: settings spelled by ``names`` when ``exc`` is a :class:`SettingError`."""
    return exc.render(names) if isinstance(exc, SettingError) else str(exc)
