"""Writes one API page per public package: ``python docs/api/_gen.py`` (rerun after changing
an ``__all__``; tests/docs checks every exported name is on its page).

Each page lists its package's ``__all__`` explicitly, so re-exported names render. Two kinds
of name griffe cannot render as members are handled here: a function named like a submodule
(``mleops.fit``, ``mleops.gate.calibration``) is rendered from where it is defined, and plain
constants (often tuple-assigned, which griffe skips) go to a table with their values.
"""
import importlib
import importlib.util
import inspect
from pathlib import Path

PACKAGES = ["mleops", "mleops.families", "mleops.fit", "mleops.gate", "mleops.registry",
            "mleops.monitor", "mleops.pipeline", "mleops.serving", "mleops.deploy",
            "mleops.rollout", "mleops.rollout.kernels", "mleops.rollout.state",
            "mleops.rollout.backends", "mleops.rollout.backends.local",
            "mleops.rollout.control", "mleops.rollout.judge"]

HERE = Path(__file__).parent


def _is_submodule(pkg: str, name: str) -> bool:
    try:
        return importlib.util.find_spec(f"{pkg}.{name}") is not None
    except (ImportError, ValueError):
        return False


def page(pkg: str) -> str:
    mod = importlib.import_module(pkg)
    members, elsewhere, constants = [], [], []
    for name in mod.__all__:
        obj = getattr(mod, name)
        if isinstance(obj, (str, int, float, bool, tuple, frozenset)) and not inspect.isclass(obj):
            constants.append((name, obj))
        elif (inspect.isfunction(obj) or inspect.isclass(obj)) and _is_submodule(pkg, name):
            elsewhere.append((name, f"{obj.__module__}.{obj.__qualname__}"))
        else:
            members.append(name)
    out = [f"# `{pkg}`", "", f"::: {pkg}", "    options:", "      show_root_heading: false"]
    out += ["      members:"] + [f"        - {m}" for m in members] if members else ["      members: false"]
    for name, path in elsewhere:
        out += ["", f"## `{pkg}.{name}`", "",
                f"`{pkg}.{name}` is `{path}` (the name is also a submodule's).", "",
                f"::: {path}", "    options:", "      show_root_heading: true",
                "      show_root_full_path: true", "      heading_level: 3"]
    if constants:
        out += ["", "## Constants", "", "| name | value |", "|---|---|"]
        out += [f"| `{name}` | `{value!r}` |".replace("|`", "| `") for name, value in constants]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    for pkg in PACKAGES:
        (HERE / f"{pkg}.md").write_text(page(pkg))
        print("wrote", f"docs/api/{pkg}.md")
