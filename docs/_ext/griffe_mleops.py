"""Griffe extensions for the API reference (``mkdocs.yml`` loads them).

- ``PlainBrackets``: docstrings are plain text (sphinx-ish), not Markdown, so a ``[a] [b]``
  outside code spans is escaped instead of read as a Markdown reference link, and sphinx
  roles (``:class:`X```) are shown as code.
- ``TupleConstants``: module constants assigned by tuple unpacking
  (``PROMOTED, ROLLED_BACK, FAILED = "promoted", "rolled_back", "failed"``) become attributes;
  griffe's visitor only records single-target assignments, so they would be missing from the
  pages of the packages that re-export them.
"""

import ast
import re

import griffe

_CODE = re.compile(r"(``.*?``|`[^`]*`)", re.S)
_REF = re.compile(r"\]\s*\[")
_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj|const):`~?([^`]+)`")


def _escape(text: str) -> str:
    text = _ROLE.sub(r"`\1`", text)  # sphinx roles read as code: :class:`X` -> `X`
    parts = _CODE.split(text)
    return "".join(p if i % 2 else _REF.sub(lambda m: m.group(0)[:-1] + "\\[", p)
                   for i, p in enumerate(parts))


class PlainBrackets(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _escape(obj.docstring.value)


class TupleConstants(griffe.Extension):
    def on_module_members(self, *, node, mod, agent, **kwargs) -> None:
        if not isinstance(node, ast.Module):
            return
        for stmt in node.body:
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Tuple)
                    and isinstance(stmt.value, ast.Tuple)
                    and len(stmt.targets[0].elts) == len(stmt.value.elts)):
                continue
            for target, value in zip(stmt.targets[0].elts, stmt.value.elts):
                if isinstance(target, ast.Name) and target.id not in mod.members:
                    attr = griffe.Attribute(target.id, lineno=stmt.lineno,
                                            endlineno=stmt.end_lineno,
                                            value=ast.unparse(value))
                    attr.labels.add("module-attribute")
                    mod.set_member(target.id, attr)
