"""Package attributes imported on first use (PEP 562), so ``import shoal`` and the command
line's error path do not pay for torch, scipy and the privacy accountants up front.

A package lists what it exports and where each lives; an attribute is imported the first
time it is read and then kept in the package. Sub-packages load the same way
(``shoal.privacy``). The package mirrors its table in an ``if TYPE_CHECKING`` import block
for type checkers, and ``tests/test_lazy.py`` checks that the two agree.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def exports(
    namespace: dict[str, Any], table: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for the package whose globals are ``namespace``;
    ``table`` maps each exported name to ``"module"`` or, for a renamed one, ``"module:attr"``."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        where = table.get(name)
        if where is None:
            try:
                return importlib.import_module(f"{package}.{name}")  # a sub-package or module
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        module, _, attr = where.partition(":")
        value = getattr(importlib.import_module(module), attr or name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *table})

    return __getattr__, __dir__
