"""The documentation site: it builds with --strict, every public name is on its API page, and
every runnable example (a fence preceded by `<!-- exec -->`) exits 0."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
BIN = Path(sys.executable).parent
MKDOCS = BIN / "mkdocs"

PACKAGES = ["mleops", "mleops.families", "mleops.fit", "mleops.gate", "mleops.registry",
            "mleops.monitor", "mleops.pipeline", "mleops.serving", "mleops.deploy",
            "mleops.rollout", "mleops.rollout.kernels", "mleops.rollout.state",
            "mleops.rollout.backends", "mleops.rollout.backends.local",
            "mleops.rollout.control", "mleops.rollout.judge"]

MARK = "<!-- exec -->"
FENCE = re.compile(r"^```(python|bash)\s*$")


def _blocks() -> list[tuple[str, str, str]]:
    """(id "page:line", language, code) of every runnable block in docs/."""
    out = []
    for page in sorted(DOCS.rglob("*.md")):
        lines = page.read_text().splitlines()
        quoted = False  # inside a ````-fence: an example of the syntax, not a runnable block
        for i, line in enumerate(lines):
            if line.startswith("````"):
                quoted = not quoted
            if quoted or line.strip() != MARK:
                continue
            m = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
            assert m, f"{page.relative_to(DOCS)}:{i + 1}: {MARK} must precede a python/bash fence"
            end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
            out.append((f"{page.relative_to(DOCS)}:{i + 2}", m.group(1),
                        "\n".join(lines[i + 2:end]) + "\n"))
    return out


BLOCKS = _blocks()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    p = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, f"mkdocs build --strict failed:\n{p.stderr}\n{p.stdout}"
    return out


def test_builds_strict(site):
    assert (site / "index.html").exists()


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_documented(site, package):
    page = site / "api" / package / "index.html"
    assert page.exists(), f"no API page for {package}: run python docs/api/_gen.py"
    html = page.read_text()
    ids = set(re.findall(r'id="([^"]+)"', html))
    mod = importlib.import_module(package)

    def documented(name: str) -> bool:
        obj = getattr(mod, name)
        home = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
        return (f"{package}.{name}" in ids          # rendered as a member
                or home in ids                      # rendered from where it is defined
                or f"<td><code>{name}</code></td>" in html)  # a constants table

    missing = [name for name in mod.__all__ if not documented(name)]
    assert not missing, (f"{package}: {missing} in __all__ but not on docs/api/{package}.md; "
                         "run python docs/api/_gen.py")


def test_enough_runnable_examples():
    assert len(BLOCKS) >= 6, [b[0] for b in BLOCKS]


@pytest.mark.parametrize("lang,code", [b[1:] for b in BLOCKS], ids=[b[0] for b in BLOCKS])
def test_runnable_example(lang, code, tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLEOPS_PLANE_DIR": str(tmp_path / "planes")}
    cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-euo", "pipefail",
                                                                   "-c", code]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, f"exit {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
