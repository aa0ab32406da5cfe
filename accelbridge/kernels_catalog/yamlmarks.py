"""Read YAML (safe_load semantics) into plain data plus the line/column of every node.

PyYAML's constructor forgets positions and silently keeps the last of duplicate keys;
composing the node graph ourselves keeps both the marks and the duplicates visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from accelbridge.kernels_catalog.errors import Issue

Path = tuple[Any, ...]
# libyaml's composer when present (same marks, several times faster), else the pure-Python one
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Document:
    file: str
    data: Any
    issues: list[Issue] = field(default_factory=list)  # found while reading (duplicate keys)
    value_marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def at(self, path: Path, message: str, key: bool = False) -> Issue:
        """An issue located at the node of ``path`` (its key when ``key``), else its nearest parent."""
        marks = self.key_marks if key else self.value_marks
        p = tuple(path)
        while p and p not in marks:
            p = p[:-1]
        line, col = marks.get(p, self.value_marks.get((), (1, 1)))
        return Issue(self.file, line, col, message)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def parse(text: str | bytes, file: str) -> tuple[Document | None, list[Issue]]:
    """Parse one catalog file; malformed input becomes located issues, never a traceback."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            return None, [Issue(file, 1, 1, f"not UTF-8 text (byte {e.start}): a catalog is a YAML text file")]
    try:
        nodes = list(yaml.compose_all(text, Loader=_LOADER))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = e.problem or e.context or "malformed YAML"
        row = text.split("\n")[line - 1] if line <= text.count("\n") + 1 else ""
        at_tab = "\t" in row[:col]  # libyaml says only "found character that cannot start any token"
        hint = " (YAML indents with spaces, never tabs)" if at_tab or "\\t" in problem or "tab" in problem else ""
        return None, [Issue(file, line, col, f"malformed YAML: {problem}{hint}")]
    except yaml.reader.ReaderError as e:  # control characters: located by offset, not by mark
        before = text[: e.position]
        line, col = before.count("\n") + 1, e.position - (before.rfind("\n") + 1) + 1
        return None, [Issue(file, line, col, f"malformed YAML: {e.reason} (character {e.character!r})")]
    except yaml.YAMLError as e:
        return None, [Issue(file, 1, 1, f"malformed YAML: {e}")]
    nodes = [n for n in nodes if n is not None]
    if not nodes:
        return None, [Issue(file, 1, 1, "empty catalog file: expected a mapping with schema, platform and providers")]
    if len(nodes) > 1:
        line, col = _mark(nodes[1])
        return None, [Issue(file, line, col, "a catalog file holds one YAML document; found a second one here")]
    doc = Document(file, None)
    constructor = yaml.SafeLoader("")
    doc.data = _build(nodes[0], (), doc, doc.issues, constructor)
    return doc, []


def _build(node: yaml.Node, path: Path, doc: Document, issues: list[Issue], constructor: yaml.SafeLoader) -> Any:
    doc.value_marks[path] = _mark(node)
    # node.id, not isinstance: libyaml's composer keeps the node classes of the first `yaml` import
    if node.id == "mapping":
        out: dict[Any, Any] = {}
        first_seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.id != "scalar":
                issues.append(Issue(doc.file, *_mark(key_node), "a mapping key must be a plain scalar"))
                continue
            key = constructor.construct_object(key_node)
            if key in first_seen:
                issues.append(
                    Issue(doc.file, *_mark(key_node), f"duplicate key {key!r} (first at line {first_seen[key]})")
                )
                continue
            first_seen[key] = key_node.start_mark.line + 1
            doc.key_marks[path + (key,)] = _mark(key_node)
            out[key] = _build(value_node, path + (key,), doc, issues, constructor)
        return out
    if node.id == "sequence":
        return [_build(item, path + (i,), doc, issues, constructor) for i, item in enumerate(node.value)]
    try:
        return constructor.construct_object(node)
    except yaml.YAMLError as e:
        issues.append(Issue(doc.file, *_mark(node), f"bad scalar: {e}"))
        return None
