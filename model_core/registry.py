"""A registry of named entries whose implementations are imported only when used (torch-free).

The samplers (``model_core.sampling.registry``) and the guidance-provider
kinds (``model_core.sampling.providers``) are each one of these: the API and
preset validation read their names without importing torch, and an entry's
``target`` (``"package.module:attribute"``) is imported when a pipeline
actually runs it.
"""
from __future__ import annotations

import importlib
import re
from typing import Any, Generic, Iterator, Protocol, TypeVar

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class Entry(Protocol):
    name: str
    target: str


E = TypeVar("E", bound=Entry)


class LazyRegistry(Generic[E]):
    def __init__(self, what: str, default: str | None = None):
        self.what = what          # "sampler", "classifier kind": for messages
        self.default = default    # the entry ``get(None)`` means, if any
        self._entries: dict[str, E] = {}

    def register(self, entry: E, *, replace: bool = False) -> E:
        if not NAME_PATTERN.match(entry.name):
            raise ValueError(f"{self.what} name {entry.name!r} must be 1-32 characters of a-z, 0-9 and _, "
                             "starting with a letter")
        if ":" not in entry.target:
            raise ValueError(f"{self.what} {entry.name!r}: target {entry.target!r} must be 'module:attribute'")
        if entry.name in self._entries and not replace:
            raise ValueError(f"{self.what} {entry.name!r} is already registered")
        self._entries[entry.name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __iter__(self) -> Iterator[E]:
        return iter(tuple(self._entries.values()))

    def get(self, name: str | None) -> E:
        key = self.default if name is None else name
        try:
            return self._entries[key]
        except (KeyError, TypeError):
            raise ValueError(f"{self.what} {name!r} is unknown; choose one of {', '.join(self._entries)}") from None

    def load(self, name: str | None) -> Any:
        """The entry's implementation (imports its module, and with it usually torch)."""
        module, _, attr = self.get(name).target.partition(":")
        return getattr(importlib.import_module(module), attr)
