"""Glob: find files by name pattern (Claude Code's Glob tool), and the glob matcher.

Patterns use ``/`` as separator; ``*`` and ``?`` match within one path segment, ``**`` as a
whole segment matches any number of folders (also none), ``[abc]``/``[!abc]`` match one
character of a set, ``{a,b}`` expands to alternatives. Grep's ``glob`` filter uses
:func:`compile_glob` too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from crewbox.errors import ToolError
from crewbox.llm.base import ToolDef
from worker.tools.sandbox import Sandbox

MAX_RESULTS = 100
"""At most this many paths are listed (newest first); a note says when more matched."""

MAX_BRACE_ALTERNATIVES = 256
"""A pattern whose ``{a,b}`` groups expand to more alternatives than this is refused."""


class GlobTool:
    """Glob(pattern, path?): files under ``path`` (default: the working directory).

    Returns absolute paths, one a line, newest modification time first (at most
    ``MAX_RESULTS``), or ``"No files found"``. Only files whose real path is inside the
    sandbox are listed; symlinked folders are not entered.
    Raises ToolError for an absolute pattern, a ``..`` segment, or a ``path`` outside the
    sandbox or not a folder.
    """

    name = "Glob"
    definition = ToolDef(
        name="Glob",
        description=(
            'Fast file pattern matching. Supports glob patterns like "**/*.md" or '
            '"src/**/*.{py,txt}". Returns matching file paths sorted by modification time, '
            "newest first."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "pattern": {
                    "type": "string",
                    "description": "The glob pattern to match files against, relative to path",
                },
                "path": {
                    "type": "string",
                    "description": "The directory to search in. If not specified, the current "
                    "working directory will be used. Omit this field to use the default "
                    "directory. Must be a valid directory path if provided.",
                },
            },
            "required": ["pattern"],
            "additionalProperties": False,
        },
    )

    def run(self, input: dict[str, Any], sandbox: Sandbox) -> str:
        """List the matching files; see the class docstring."""
        pattern: str = input["pattern"]
        top = resolve_folder_or_file(input.get("path"), sandbox)
        if not top.is_dir():
            raise ToolError(f"{sandbox.display(top)} is not a directory")
        matcher = compile_glob(_relative_pattern(pattern))
        found = [p for p in sandbox.walk_files(top) if matcher.match(p.relative_to(top).as_posix())]
        return _listing(found, sandbox)


def resolve_folder_or_file(path: str | None, sandbox: Sandbox) -> Path:
    """Resolve an optional ``path`` input: the working directory when None.

    Raises:
        ToolError: the path is outside the sandbox or does not exist.
    """
    top = sandbox.cwd if path is None else sandbox.resolve(path)
    if not top.exists():
        raise ToolError(f"path {sandbox.display(top)} does not exist")
    return top


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a glob pattern (see the module docstring) to a regex matching whole paths.

    Match it against ``/``-separated paths relative to the search folder.

    Raises:
        ToolError: the pattern expands to more than ``MAX_BRACE_ALTERNATIVES`` alternatives.
    """
    alternatives = _expand_braces(pattern)
    if len(alternatives) > MAX_BRACE_ALTERNATIVES:
        raise ToolError(f"glob {pattern!r} expands to too many alternatives; simplify it")
    return re.compile("(?:" + "|".join(_translate(alt) for alt in alternatives) + r")\Z")


def _relative_pattern(pattern: str) -> str:
    if pattern.startswith("/"):
        raise ToolError(
            "pattern must be relative; put the folder in path, e.g. "
            'path="/workspace", pattern="**/*.md"'
        )
    if ".." in pattern.split("/"):
        raise ToolError("pattern must not contain '..'; put the folder to search in path")
    while pattern.startswith("./"):
        pattern = pattern[2:]
    return pattern


def _listing(found: list[Path], sandbox: Sandbox) -> str:
    if not found:
        return "No files found"
    dated = []
    for path in found:
        try:
            dated.append((-path.stat().st_mtime, str(path)))
        except OSError:
            continue
    shown = [sandbox.display(name) for _, name in sorted(dated)[:MAX_RESULTS]]
    if len(dated) > MAX_RESULTS:
        shown.append(
            f"(Results are truncated: {len(dated)} files matched. "
            "Use a more specific path or pattern.)"
        )
    return "\n".join(shown)


def _expand_braces(pattern: str) -> list[str]:
    start, end = _brace_group(pattern)
    if start < 0:
        return [pattern]
    head, body, tail = pattern[:start], pattern[start + 1 : end], pattern[end + 1 :]
    expanded: list[str] = []
    for option in _split_top_level(body):
        expanded.extend(_expand_braces(head + option + tail))
        if len(expanded) > MAX_BRACE_ALTERNATIVES:
            break
    return expanded


def _brace_group(pattern: str) -> tuple[int, int]:
    """Index of the first ``{`` and its matching ``}`` when the group has a comma."""
    depth, start = 0, -1
    for index, char in enumerate(pattern):
        if char == "{":
            start = index if depth == 0 else start
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
            if depth == 0 and len(_split_top_level(pattern[start + 1 : index])) > 1:
                return start, index
    return -1, -1


def _split_top_level(body: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in body:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += (char == "{") - (char == "}")
        current += char
    parts.append(current)
    return parts


def _translate(pattern: str) -> str:
    segments = pattern.split("/")
    regex = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            regex.append(".*" if last else "(?:[^/]+/)*")
        else:
            regex.append(_translate_segment(segment) + ("" if last else "/"))
    return "".join(regex)


def _translate_segment(segment: str) -> str:
    regex, index = [], 0
    while index < len(segment):
        char = segment[index]
        index += 1
        if char == "*":
            regex.append("[^/]*")
        elif char == "?":
            regex.append("[^/]")
        elif char == "[" and "]" in segment[index + 1 :]:
            close = segment.index("]", index + 1)
            regex.append(_char_class(segment[index:close]))
            index = close + 1
        else:
            regex.append(re.escape(char))
    return "".join(regex)


def _char_class(body: str) -> str:
    negate = body.startswith("!")
    body = body[1:] if negate else body
    escaped = body.replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[")
    return "[" + ("^/" if negate else "") + escaped + "]"
