"""The YAML reader that keeps the line of every key, and collects the problems found in the file."""

from __future__ import annotations

import re
from typing import Any, Optional

import yaml

from registry_cache.config.model import Problem

KeyPath = tuple[str, ...]
_PLAIN_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)")


def is_int(value: Any) -> bool:
    """True for a whole number as written (YAML's `true` is a bool, not 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def dig(data: Any, *keys: str) -> Any:
    """The value at `keys` in nested mappings, None when a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def os_reason(exc: BaseException) -> str:
    """Why a file could not be read, in the system's words (`Permission denied`)."""
    return getattr(exc, "strerror", None) or type(exc).__name__


class Document:
    """A YAML document with the line of every key, and the problems found in it."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: dict[KeyPath, int] = {(): 1}
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.inputs: dict[str, str] = {}  # files read besides the config: path -> digest
        self._constructor = yaml.constructor.SafeConstructor()

    def add(self, path: KeyPath, message: str, line: Optional[int] = None) -> None:
        """Report a problem at key `path` (on its line unless `line` is given)."""
        if line is None:
            line = self.line_of(path)
        shown = ".".join(path) if path else "(top level)"
        self.problems.append(Problem(self.filename, line, shown, message))

    def warn(self, path: KeyPath, message: str) -> None:
        """Note something that works but should not stay so, at key `path`."""
        self.warnings.append(Problem(self.filename, self.line_of(path), ".".join(path), message))

    def line_of(self, path: KeyPath) -> int:
        """The line of key `path`, or of its closest written parent."""
        while path not in self.lines:
            path = path[:-1]
        return self.lines[path]

    def load(self, text: str) -> Any:
        """The document's data (None on a syntax error, which is reported)."""
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            if exc.context == "while scanning a quoted scalar" and exc.context_mark:
                # a quoted value may span lines, so YAML notices only at the end of the file
                self.add((), "YAML syntax error: a quote opened on this line is never closed; "
                         "close it", exc.context_mark.line + 1)
                return None
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            reason = " ".join(p for p in (exc.context, exc.problem) if p)
            self.add((), f"YAML syntax error: {reason}; check the indentation and quoting", line)
            return None
        except yaml.YAMLError as exc:
            self.add((), f"YAML error: {exc}")
            return None
        if node is None:
            return None
        return self._value(node, ())

    def _value(self, node: yaml.Node, path: KeyPath) -> Any:
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                # a key as written: `true:` names "true", `5000:` names "5000", not True or 5000
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else \
                    self._scalar(key_node, path)
                key_path = (*path, str(key))
                if key in result:
                    first = self.lines.get(key_path, 0)
                    self.add(
                        key_path,
                        f"duplicate key (first on line {first}); YAML would silently keep "
                        "only the last one: remove or rename one of them",
                        key_node.start_mark.line + 1,
                    )
                    continue
                self.lines[key_path] = key_node.start_mark.line + 1
                result[key] = self._value(value_node, key_path)
            return result
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                item_path = (*path, str(index))
                self.lines[item_path] = item.start_mark.line + 1
                items.append(self._value(item, item_path))
            return items
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        try:
            value = self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.add(path, f"unsupported YAML value: {exc}", node.start_mark.line + 1)
            return None
        if is_int(value) and not _PLAIN_DECIMAL.fullmatch(node.value):
            # YAML 1.1 reads 05000 as octal, 0x1389 as hex, 83:20 as base 60: not what was meant
            self.add(path, f"'{node.value}' reads as the number {value}; write a number as "
                           "plain decimal digits", node.start_mark.line + 1)
        return value
