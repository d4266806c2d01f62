"""Grep: search file contents with a regular expression (Claude Code's Grep tool).

Pure Python (``re``) so it works where ripgrep is not installed. Binary files (a NUL byte in
the first 8 KiB) are skipped, as ripgrep does; files are read as UTF-8 with undecodable
bytes replaced.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field

from crewbox.errors import ToolError
from worker.tools.base import BaseTool, ToolInput, is_binary
from worker.tools.glob import compile_glob, resolve_folder_or_file
from worker.tools.sandbox import Sandbox

MAX_OUTPUT_CHARS = 30_000
"""Output longer than this is cut, with a note saying so."""

MAX_LINE_CHARS = 500
"""Matching lines are shown cut to this many characters in ``content`` mode."""

OutputMode = Literal["content", "files_with_matches", "count"]


class GrepInput(ToolInput):
    """Grep's parameters (Claude Code's names; ``-i`` and ``-n`` are aliases)."""

    pattern: str = Field(
        description="The regular expression pattern to search for in file contents"
    )
    path: str | None = Field(
        default=None,
        description="File or directory to search in. Defaults to the current working directory.",
    )
    glob: str | None = Field(
        default=None, description='Glob pattern to filter files (e.g. "*.js", "*.{ts,tsx}")'
    )
    output_mode: OutputMode = Field(
        default="files_with_matches",
        description='Output mode: "content" shows matching lines, "files_with_matches" shows '
        'file paths (default), "count" shows match counts per file',
    )
    ignore_case: bool = Field(default=False, alias="-i", description="Case insensitive search")
    line_numbers: bool = Field(
        default=True,
        alias="-n",
        description='Show line numbers in output. Requires output_mode: "content", ignored '
        "otherwise. Defaults to true.",
    )


class GrepTool(BaseTool[GrepInput]):
    """Grep(pattern, path?, glob?, output_mode?, -i?, -n?): regex search in the sandbox.

    ``path`` is a file or folder (default: the working directory); ``glob`` filters files
    (matched against the file name when it has no ``/``, else against the path relative to
    ``path``). Output by ``output_mode``:

    - ``files_with_matches`` (default): ``"Found <n> files"`` then absolute paths, newest first.
    - ``content``: ``<path>:<line number>:<line>`` per matching line (``-n``, default true)
      or ``<path>:<line>``.
    - ``count``: ``<path>:<matching lines>`` per file, then a total.

    Nothing matched: ``"No files found"`` / ``"No matches found"``. Files whose real path is
    outside the sandbox are never opened. Raises ToolError for an invalid regex or a
    ``path`` outside the sandbox.
    """

    name = "Grep"
    description = (
        "Searches file contents with a regular expression (Python re syntax). Filter "
        'files with glob (e.g. "*.py", "*.{ts,tsx}"). output_mode "files_with_matches" '
        '(default) lists files, "content" shows matching lines, "count" counts them.'
    )
    input_model = GrepInput

    def run(self, input: GrepInput, sandbox: Sandbox) -> str:
        """Search and format the result; see the class docstring."""
        regex = _compile(input.pattern, input.ignore_case)
        top = resolve_folder_or_file(input.path, sandbox)
        files = [f for f in _candidates(top, input.glob, sandbox) if _is_text(f)]
        if input.output_mode == "content":
            return _content(files, regex, input.line_numbers, sandbox)
        if input.output_mode == "count":
            return _counts(files, regex, sandbox)
        return _files_with_matches(files, regex, sandbox)


def _compile(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise ToolError(f"invalid regular expression {pattern!r}: {exc}") from exc


def _candidates(top: Path, glob: str | None, sandbox: Sandbox) -> Iterator[Path]:
    if top.is_file():
        yield top
        return
    matcher = compile_glob(glob) if glob else None
    for path in sandbox.walk_files(top):
        subject = path.relative_to(top).as_posix() if glob and "/" in glob else path.name
        if matcher is None or matcher.match(subject):
            yield path


def _is_text(path: Path) -> bool:
    try:
        return not is_binary(path)
    except OSError:
        return False


def _hits(path: Path, regex: re.Pattern[str]) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without newline) for each matching line."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                text = line.rstrip("\r\n")
                if regex.search(text):
                    yield number, text
    except OSError:
        return


def _files_with_matches(files: list[Path], regex: re.Pattern[str], sandbox: Sandbox) -> str:
    matched = [path for path in files if next(_hits(path, regex), None) is not None]
    if not matched:
        return "No files found"
    newest_first = sorted(matched, key=lambda p: (-_mtime(p), str(p)))
    lines = [f"Found {len(matched)} file{'s' if len(matched) != 1 else ''}"]
    lines += [sandbox.display(path) for path in newest_first]
    return _clip(lines)


def _content(
    files: list[Path], regex: re.Pattern[str], line_numbers: bool, sandbox: Sandbox
) -> str:
    lines: list[str] = []
    size = 0
    for path in files:
        for number, text in _hits(path, regex):
            shown = sandbox.display(path)
            prefix = f"{shown}:{number}:" if line_numbers else f"{shown}:"
            lines.append(prefix + text[:MAX_LINE_CHARS])
            size += len(lines[-1]) + 1
            if size > MAX_OUTPUT_CHARS:
                return _clip(lines)
    return _clip(lines) if lines else "No matches found"


def _counts(files: list[Path], regex: re.Pattern[str], sandbox: Sandbox) -> str:
    counted = [(path, sum(1 for _ in _hits(path, regex))) for path in files]
    counted = [(path, count) for path, count in counted if count]
    if not counted:
        return "No matches found"
    lines = [f"{sandbox.display(path)}:{count}" for path, count in counted]
    total = sum(count for _, count in counted)
    lines.append(f"\nFound {total} total occurrences across {len(counted)} files.")
    return _clip(lines)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _clip(lines: list[str]) -> str:
    text = "\n".join(lines)
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    cut = text[:MAX_OUTPUT_CHARS].rsplit("\n", 1)[0]
    return cut + "\n(output truncated; narrow the pattern, path or glob)"
