"""`Current`: a namespace entry that stands for whatever its getter returns now, so that
the REPL's `database` follows `use_tenant` and `jobs` follows `reload()`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Current:
    """Stands for whatever `get()` returns now: attributes, lookup, iteration, `len`,
    `in`, `dir()` and `repr()` are its."""

    __slots__ = ("_get",)

    def __init__(self, get: Callable[[], Any]) -> None:
        self._get = get

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._get(), attr)

    def __getitem__(self, key: Any) -> Any:
        return self._get()[key]

    def __iter__(self) -> Any:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __contains__(self, item: Any) -> bool:
        return item in self._get()

    def __dir__(self) -> list[str]:
        return dir(self._get())

    def __repr__(self) -> str:
        return repr(self._get())
