"""The front matter of a persona file, read as Claude Code reads it (standard library only).

A persona file is Markdown with a front matter block between two ``---`` lines. Claude Code
reads the block as YAML, and where it is not valid YAML (real subagent files often have an
unquoted ``description`` with ``: `` inside, ``<example>`` blocks and literal ``\\n``) it
falls back to reading it line by line. :func:`lenient_fields` is that fallback:

- a line ``key: value`` starting at column 0 opens a key; the first ``:`` followed by a space
  (or the end of the line) splits the key from its value;
- any other non-blank line continues the value of the key before it (joined with a space),
  or, when it is ``- item``, adds an item to that key's list;
- matching surrounding quotes are removed; ``\\n`` escapes stay as they are written;
- comments (``#`` at column 0) and blank lines are skipped.

Standard library only: ``make up`` runs :mod:`crewbox.cluster` with the host's ``python3``,
which reads persona files through this module before any dependency is installed.
"""

from __future__ import annotations

import re
from pathlib import Path

MAX_NAME_CHARS = 63
"""The longest persona name: a DNS label (RFC 1035), so it is also a compose service and
host name, a network name (plus ``-net``) and a Redis user name in the cluster. Claude Code
sets no limit; real subagent names run to 47 characters."""

NAME_PATTERN = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")
"""A persona name: a DNS label of lowercase letters, digits and hyphens, starting with a
letter and not ending with a hyphen, at most MAX_NAME_CHARS characters."""


def name_problem(name: str) -> str | None:
    """What keeps ``name`` from being a persona name, said so it can be fixed; None when
    it matches NAME_PATTERN."""
    if NAME_PATTERN.match(name):
        return None
    if len(name) > MAX_NAME_CHARS:
        return f"is {len(name)} characters long; at most {MAX_NAME_CHARS} (a DNS label)"
    bad = sorted(
        {c for c in name if not ((c.islower() and c.isascii()) or c.isdigit() or c == "-")}
    )
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return f"has {shown}: use lowercase letters, digits and hyphens only"
    if not name[:1].isalpha():
        return "must start with a lowercase letter"
    return "must not end with a hyphen"


ROLE_PROMPTS = frozenset({"orchestrator", "synthesizer"})
"""Files in prompts/ that are the orchestrator's own prompts, not personas to plan for."""

KEY_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*):(?:[ \t]+(.*))?$")
"""A line that opens a key: the key at column 0, ``:``, then a space and the value (or
nothing)."""

LIST_ITEM = re.compile(r"^[ \t]*-[ \t]+(.*)$")
"""A YAML block-list item under the key before it: ``  - Read``."""

Field = str | list[str]
"""A value as the line reader sees it: text, or the items of a block list."""


class FrontMatterError(ValueError):
    """The text has no front matter block (it must start with a ``---`` line)."""


def split_front_matter(text: str) -> tuple[str, str]:
    """The front matter block (without its ``---`` lines) and the body of a persona file.

    A leading byte-order mark and Windows line ends are accepted.

    Raises:
        FrontMatterError: the text does not start with ``---`` or the block is not closed.
    """
    text = text.lstrip("\ufeff").replace("\r\n", "\n")
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        raise FrontMatterError("no front matter: the file must start with a '---' line")
    for index, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return "\n".join(lines[1:index]), "\n".join(lines[index + 1 :])
    raise FrontMatterError("the front matter is not closed: add a '---' line after it")


def lenient_fields(block: str) -> dict[str, Field]:
    """Read a front matter block line by line, as Claude Code does where YAML fails.

    Returns each key's text (continuation lines joined by one space, quotes removed), or the
    list of its ``- item`` lines. Lines before the first key are ignored.
    """
    fields: dict[str, Field] = {}
    key: str | None = None
    for line in block.split("\n"):
        if not line.strip() or line.startswith("#"):
            continue
        opened = KEY_LINE.match(line)
        if opened:
            key = opened.group(1)
            fields[key] = _unquote((opened.group(2) or "").strip())
        elif key is not None:
            fields[key] = _continue(fields[key], line)
    return fields


def read_fields(path: Path) -> dict[str, Field]:
    """The front matter of the file at ``path``, read line by line (:func:`lenient_fields`).

    Raises:
        OSError: the file cannot be read.
        UnicodeDecodeError: it is not UTF-8.
        FrontMatterError: it has no (closed) front matter block.
    """
    block, _ = split_front_matter(path.read_text(encoding="utf-8"))
    return lenient_fields(block)


def _continue(value: Field, line: str) -> Field:
    """``value`` with the continuation ``line`` added: an item to a list, else text."""
    item = LIST_ITEM.match(line)
    if item and (isinstance(value, list) or value == ""):
        items = value if isinstance(value, list) else []
        return [*items, _unquote(item.group(1).strip())]
    text = value if isinstance(value, str) else ", ".join(value)
    return f"{text} {line.strip()}".strip()


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
