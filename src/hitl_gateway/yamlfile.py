"""Strict YAML for every configuration file the gateway reads.

PyYAML's ``safe_load`` keeps the last of two equal keys in a mapping, so a policy with
``sla: 4h`` and, further down, ``sla: 400h`` would load with 400 hours and pass every check.
Here a repeated key is an error naming the file, the line of the repeat, the key and the
line where it was first given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hitl_gateway.errors import ConfigError


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping gives the same key twice (``problem_mark``: the repeat)."""


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            # The keys as written: a merge key (<<) brings defaults the mapping may override.
            first: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # complex keys: left to the constructor's own errors
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.get(key)
                except TypeError:
                    continue
                if seen is not None:
                    raise DuplicateKeyError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"duplicate key '{key}' (first given on line {seen.start_mark.line + 1})",
                        key_node.start_mark,
                    )
                first.setdefault(key, key_node)
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """Parse one YAML document strictly: like ``yaml.safe_load``, but a repeated key in any
    mapping raises ``DuplicateKeyError`` (a ``yaml.YAMLError``, with ``problem_mark``)."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def describe(exc: yaml.YAMLError) -> str:
    """A one-line reason for a YAML error: the problem and its line."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"line {mark.line + 1}: {problem}"
    return str(exc).replace("\n", " ")


def load_file(path: Path, what: str) -> Any:
    """``path``'s YAML, or a ``ConfigError`` starting "``what`` ``path``:" that names the
    problem (unreadable, or not strict YAML; never the content)."""
    try:
        return load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path}: {describe(exc)}") from exc
