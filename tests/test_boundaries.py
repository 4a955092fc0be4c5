"""The house rules of ../shared/ARCHITECTURE.md, checked on the source (an AST walk) and on
what the entry points actually load, so the rooms stay tidy after the redesign."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
SHELLS = ("components", "pipelines", "mleops_components", "mleops_pipelines")
BASE = ("mleops.errors", "mleops._config", "mleops._version", "mleops._lazy",
        "mleops.multiplicity", "mleops.failpoints", "mleops.atomic")
#: layer rank of every room (higher may import lower, never the reverse)
LAYERS = {
    **dict.fromkeys(BASE, 0),
    **dict.fromkeys(("mleops", "mleops.fit", "mleops.families"), 1),  # root re-exports engine
    **dict.fromkeys(("mleops.gate", "mleops.artifact", "mleops.io", "mleops.storage",
                     "mleops.batches", "mleops.columns", "mleops.plots",
                     "mleops.fleet_artifact", "mleops.fleet_kernel", "mleops.fleet_merge",
                     "mleops.fleet_stream"), 2),
    **dict.fromkeys(("mleops.deploy", "mleops.serving", "mleops.registry", "mleops.prometheus",
                     "mleops.pyfunc_model"), 3),
    **dict.fromkeys(("mleops.pipeline", "mleops.rollout", "mleops.monitor"), 4),
    **dict.fromkeys(("mleops.cli", "mleops.demo"), 5),
}
OPERATIONS = ("mleops.pipeline", "mleops.rollout", "mleops.monitor")
ENGINE = ("mleops.fit", "mleops.families")


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(SRC.rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def room(module: str) -> str:
    parts = module.split(".")
    return module if module in BASE or len(parts) == 1 else ".".join(parts[:2])


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def imports(module: str, typing: bool = False) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) of every import, lazy ones included;
    typing-only imports are left out unless ``typing``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    skip = set() if typing else _type_checking_lines(tree)
    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                out.append((full, None, node.lineno) if full in MODULES
                           else (base, a.name, node.lineno))
    return out


def _violations(check) -> list[str]:
    found = []
    for module in MODULES:
        for target, name, line in imports(module):
            if (msg := check(module, target, name)):
                found.append(f"{MODULES[module].relative_to(REPO)}:{line}: {msg}")
    return found


def test_dependencies_point_down():
    def check(module, target, name):
        if target.split(".")[0] != "mleops" or room(target) not in LAYERS:
            return None
        src, dst = LAYERS[room(module)], LAYERS[room(target)]
        if dst > src:
            return f"{room(module)} (layer {src}) imports {target} (layer {dst})"
        if room(module) in OPERATIONS and room(target) in OPERATIONS and \
                room(module) != room(target):
            return f"operations room {room(module)} imports another: {target}"
        return None

    assert sorted({room(m) for m in MODULES}) == sorted(LAYERS), "a room without a layer"
    assert _violations(check) == []


#: the rollout room's subpackages, bottom to top; equal ranks do not import each other
ROLLOUT = {"kernels": 0, "state": 1, "backends": 2, "control": 3, "judge": 3}


def _rollout_part(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["mleops", "rollout"] else None


def test_the_rollout_room_points_down():
    """kernels < state < backends < control, judge: the folders say what may import what."""
    assert {_rollout_part(m) for m in MODULES} - {None} == set(ROLLOUT)

    def check(module, target, name):
        src, dst = _rollout_part(module), _rollout_part(target)
        if src is None or dst is None or src == dst:
            return None
        if ROLLOUT[dst] >= ROLLOUT[src]:
            return f"rollout.{src} (rank {ROLLOUT[src]}) imports {target}"
        return None

    def outside(module, target, name):  # the root package is the surface: nobody inside uses it
        if _rollout_part(module) and target == "mleops.rollout":
            return f"{module} imports the rollout surface"
        if _rollout_part(module) == "kernels" and target.split(".")[0] in (
                "mlflow", "kubernetes", "kfp", "click", "http"):
            return f"a decision kernel imports {target}"
        return None

    assert _violations(check) == []
    assert _violations(outside) == []


def test_engine_imports_no_service_library():
    def check(module, target, name):
        if room(module) in ENGINE and target.split(".")[0] in ("mlflow", "kfp", "click",
                                                                "kubernetes"):
            return f"engine imports {target}"
        return None

    assert _violations(check) == []


def test_only_the_cli_imports_the_cli_and_nothing_imports_the_shells():
    def check(module, target, name):
        top = target.split(".")[0]
        if top in SHELLS:
            return f"the library imports the shell {target}"
        if room(target) == "mleops.cli" and room(module) != "mleops.cli":
            return f"{module} imports the CLI ({target})"
        return None

    assert _violations(check) == []


def test_no_private_name_crosses_a_room():
    def check(module, target, name):
        if target.split(".")[0] != "mleops" or room(target) in BASE:
            return None
        if room(target) == room(module) and room(module) != "mleops":
            return None
        private = [p for p in target.split(".")[1:] if p.startswith("_")]
        if name and name.startswith("_"):
            private.append(name)
        return f"{module} imports private {target}:{name}" if private else None

    assert _violations(check) == []


def test_only_the_registry_talks_to_mlflow():
    def check(module, target, name):
        if target.split(".")[0] == "mlflow" and room(module) not in ("mleops.registry",):
            return f"{module} imports {target} (use mleops.registry.Registry)"
        return None

    assert _violations(check) == []
    reach_ins = []
    for module, path in MODULES.items():
        if room(module) == "mleops.registry":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("_call", "_errors", "_version",
                                                                 "_session", "client") \
                    and "reg" in ast.unparse(node.value).lower():
                reach_ins.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert reach_ins == []


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in imports(m, typing=True) if t in MODULES and t != m}
            for m in MODULES}


def test_no_import_cycle():
    """Lazy (function-body) and typing-only imports count too: they must not hide a cycle."""
    graph, state, cycles = _graph(), {}, []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_family_decisions_live_on_the_family():
    """No ``fam.name == "genpareto"`` switches outside families/ (use the Family protocol)."""
    from mleops.families import FAMILIES

    names = set(FAMILIES)
    found = []
    for module, path in MODULES.items():
        if room(module) == "mleops.families":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            consts = {c.value for s in sides for c in ast.walk(s)
                      if isinstance(c, ast.Constant) and isinstance(c.value, str)}
            if consts & names and any(isinstance(s, ast.Attribute) and s.attr == "name" or
                                      isinstance(s, ast.Call) and "get(\"name\")" in
                                      ast.unparse(s) for s in sides):
                found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_one_place_for_each_setting():
    """The version, the image tags and the gate tolerance are written once."""
    from mleops import _config, _version

    literal = {_version.__version__: "version", str(_config.GATE_TOLERANCE): "gate tolerance"}
    found = []
    for module, path in MODULES.items():
        if module in ("mleops._version", "mleops._config"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str | float):
                text = str(node.value)
                for lit, what in literal.items():
                    if text == lit or f":{lit}" in text:
                        found.append(f"{module}:{node.lineno}: {what} {text!r}")
    assert found == []
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"]
    for shell in (REPO / "pipelines" / "training.py", REPO / "components" / "training.py"):
        assert "0.1.0" not in shell.read_text() and "0.002" not in shell.read_text()


def test_modules_stay_small_and_rooms_export_their_names():
    big = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 400}
    assert big == {}
    for module, path in MODULES.items():
        if path.name == "__init__.py" and room(module) not in ("mleops.cli", "mleops.demo"):
            assert "__all__" in path.read_text(), f"{module} does not say what it exports"


def test_every_package_is_installed():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    packages = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    assert packages <= listed
    assert {"mleops_components", "mleops_pipelines"} <= listed


LOADS = {  # entry point -> top-level packages it must not load
    "import mleops.serving.seldon": ("mlflow", "kfp", "click", "pandas"),
    "import mleops.serving.oip_launch; import mleops.serving.oip": ("mlflow", "kfp"),
    "import mleops.deploy": ("click", "scipy"),
    "import mleops.rollout.backends.kubernetes": ("click", "scipy"),
    "import mleops.cli.main": ("mlflow", "kfp", "scipy", "pandas", "kubernetes"),  # mleops fit
    "import mleops": ("mlflow", "kfp", "click", "scipy", "pandas", "kubernetes", "optax"),
}


@pytest.mark.parametrize("code", list(LOADS))
def test_entry_points_load_only_what_they_need(code):
    probe = (f"{code}; import sys, json; "
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = set(json.loads(r.stdout.strip().splitlines()[-1]))
    assert sorted(loaded & set(LOADS[code])) == []


@pytest.mark.slow
def test_every_library_import_resolves():
    """Lazy imports run only when their function does: check now that each names something."""
    import importlib

    broken = []
    for module in MODULES:
        for target, name, line in imports(module):
            if target.split(".")[0] != "mleops" or target == "mleops.serving.launch":
                continue
            if module in ("mleops.serving.launch", "mleops.serving.seldon"):
                continue  # import seldon_core: the server environment only
            mod = importlib.import_module(target)
            if name and name != "*" and not hasattr(mod, name):
                broken.append(f"{module}:{line}: {target} has no {name}")
    assert broken == []
