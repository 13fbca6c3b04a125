"""The configuration reference (docs/configuration.md), generated from the dataclasses in
vicreg/config/tree.py: every key with its type, default and the comment beside or above it in the
source, so that the page cannot drift from the code (tests/test_docs.py checks it is current).

    python -m vicreg.config.reference > docs/configuration.md
"""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

from . import tree as config

SECTIONS = ("data", "model", "augment", "loss", "optim", "train", "eval")


def _comments(lines: list[str], lineno: int) -> str:
    """The comment block directly above line `lineno` (1-based) and the one at its end."""
    above = []
    i = lineno - 2
    while i >= 0 and lines[i].strip().startswith("#"):
        above.insert(0, lines[i].strip().lstrip("#").strip())
        i -= 1
    line = lines[lineno - 1]
    trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
    return " ".join(t for t in (*above, trailing) if t)


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    return repr(value).replace("'", "")


def _type(annotation: str) -> str:
    """The annotation as written, with a Literal alias spelled out as its allowed values."""
    alias = getattr(config, annotation.split(" ")[0], None)
    if typing.get_origin(alias) is typing.Literal:
        return " \\| ".join(typing.get_args(alias)) + annotation[len(annotation.split(" ")[0]):].replace("|", "\\|")
    return annotation.replace("|", "\\|")


def reference() -> str:
    """The whole page, Markdown."""
    source = Path(config.__file__).read_text()
    lines = source.splitlines()
    classes = {n.name: n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)}
    top = {f.name: f.type for f in dataclasses.fields(config.Config)}
    out = ["# Configuration reference", "",
           "What you do: write the keys you change in a YAML file (`--config FILE`) or a study's `base:`, or "
           "set one with `--set section.key=value`. Unknown keys are refused, each value is checked before any "
           "work starts, and the resolved config is logged with every run.", "",
           "Generated from the dataclasses in `vicreg/config/tree.py` by `python -m vicreg.config.reference`; "
           "a test keeps it current. The reason for each key is the comment beside it in the code.", ""]
    for section in SECTIONS:
        cls_name = top[section].__name__ if isinstance(top[section], type) else str(top[section])
        cls = getattr(config, cls_name)
        node = classes[cls_name]
        doc = (ast.get_docstring(node) or "").split("\n\n")[0].replace("\n", " ")
        out += [f"## `{section}`", ""] + ([doc, ""] if doc else [])
        out += ["| key | type | default | why |", "|---|---|---|---|"]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.target.id in fields:
                name = stmt.target.id
                annotation = ast.get_source_segment(source, stmt.annotation) or ""
                why = _comments(lines, stmt.lineno).replace("|", "\\|")
                out.append(f"| `{section}.{name}` | {_type(annotation)} | `{_default(fields[name])}` | {why} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    print(reference(), end="")


if __name__ == "__main__":
    main()
