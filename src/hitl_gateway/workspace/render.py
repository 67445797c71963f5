"""How a held output is shown to a reviewer: its text, markdown rendered to HTML with raw
HTML switched off (so an output carrying ``<script>`` is shown as text, never run), or JSON
as a tree. Everything else reaches the page through Jinja2's autoescaping."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup

# "commonmark" with html=False: raw HTML in the source is escaped, links are kept as text
# targets only when they are http(s) (markdown-it validates link schemes).
_MD = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_MARKDOWN_HINTS = ("\n#", "\n- ", "\n* ", "\n1. ", "**", "```", "\n> ", "](")


@dataclass(frozen=True, slots=True)
class Shown:
    kind: str  # text | markdown | json
    text: str  # the output as text (what an editor starts from)
    html: Markup | None = None  # rendered markdown
    tree: Any = None  # the JSON value, for the tree template


def output_of(record: Any) -> Any:
    """The model output in a held record (its ``output`` field; the record itself when it
    has none)."""
    if isinstance(record, dict) and "output" in record:
        return record["output"]
    return record


def shown(output: Any) -> Shown:
    text = _text_of(output)
    if text is not None:
        if any(hint in "\n" + text for hint in _MARKDOWN_HINTS):
            return Shown("markdown", text, Markup(_MD.render(text)))  # noqa: S704 - html off
        return Shown("text", text)
    import orjson  # noqa: PLC0415

    return Shown("json", orjson.dumps(output, option=orjson.OPT_INDENT_2).decode(), tree=output)


def _text_of(output: Any) -> str | None:
    """Outputs that are text: a string, or an object whose only content is one text field."""
    if isinstance(output, str):
        return output
    if isinstance(output, dict) and len(output) == 1:
        (value,) = output.values()
        if isinstance(value, str):
            return value
    return None


def text_field(output: Any) -> str | None:
    """The key of a one-field text output (``{"text": ...}``), to put an edit back in."""
    if isinstance(output, dict) and len(output) == 1:
        (key,) = output.keys()
        if isinstance(output[key], str):
            return str(key)
    return None


def diff(before: str, after: str) -> list[tuple[str, str]]:
    """A line diff for the edit preview: (op, line) with op one of ' ', '-', '+'."""
    out: list[tuple[str, str]] = []
    for line in difflib.ndiff(before.splitlines(), after.splitlines()):
        if line[:1] in (" ", "-", "+"):
            out.append((line[:1], line[2:]))
    return out


def markdown(text: str) -> Markup:
    """Markdown from the policy files (a rubric's criteria), raw HTML off."""
    return Markup(_MD.render(text))  # noqa: S704 - html off: the source is escaped
