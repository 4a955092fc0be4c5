"""Package attributes imported on first use (PEP 562), so that importing one step of a
package does not import its heavy siblings: a pipeline task that only reads a table should
not pay for scipy and matplotlib. Packages keep their imports under ``TYPE_CHECKING`` as
well, for type checkers and the API reference (griffe reads them statically)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``names`` (attribute -> defining module)."""

    def __getattr__(attr: str) -> Any:
        if attr not in names:
            raise AttributeError(f"module {package!r} has no attribute {attr!r}")
        value = getattr(importlib.import_module(names[attr]), attr)
        setattr(importlib.import_module(package), attr, value)
        return value

    return __getattr__
