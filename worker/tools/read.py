"""Read: show a text file's lines numbered like ``cat -n`` (Claude Code's Read tool)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from pydantic import Field

from crewbox.errors import ToolError
from worker.tools.base import BaseTool, ToolInput, is_binary
from worker.tools.sandbox import Sandbox

DEFAULT_LIMIT_LINES = 2000
"""Lines returned when the call gives no ``limit``."""

MAX_LINE_CHARS = 2000
"""Longer lines are cut to this many characters."""


class ReadInput(ToolInput):
    """Read's parameters (Claude Code's names)."""

    file_path: str = Field(
        description="The path to the file to read (absolute, or relative to the working directory)"
    )
    offset: int = Field(
        default=1,
        ge=1,
        description="The line number to start reading from (1-based). Only provide if the "
        "file is too large to read at once",
    )
    limit: int = Field(
        default=DEFAULT_LIMIT_LINES,
        ge=1,
        description="The number of lines to read. Only provide if the file is too large to "
        "read at once.",
    )


class ReadTool(BaseTool[ReadInput]):
    """Read(file_path, offset?, limit?): numbered lines of a text file in the sandbox.

    Output: one line per file line, ``f"{number:>6}\\t{text}"`` (``number`` 1-based), then a
    note when lines remain after ``limit``. ``offset`` is the 1-based first line (default 1),
    ``limit`` the number of lines (default ``DEFAULT_LIMIT_LINES``).
    Raises ToolError for a missing file, a folder, a binary file (NUL byte), or a path
    outside the sandbox.
    """

    name = "Read"
    description = (
        "Reads a text file from the sandbox. Returns its lines numbered like cat -n "
        f"(up to {DEFAULT_LIMIT_LINES} lines by default; use offset and limit for long "
        "files). Relative paths resolve against the working directory."
    )
    input_model = ReadInput

    def run(self, input: ReadInput, sandbox: Sandbox) -> str:
        """Return the numbered lines; see the class docstring. Raises ToolError."""
        path = sandbox.resolve(input.file_path)
        _check_readable(path, sandbox)
        return _numbered(path, input.offset, input.limit)


def _check_readable(path: Path, sandbox: Sandbox) -> None:
    shown = sandbox.display(path)
    if path.is_dir():
        raise ToolError(f"{shown} is a directory; use Glob to list its files")
    if not path.is_file():
        raise ToolError(f"file {shown} does not exist")
    if is_binary(path):
        raise ToolError(f"{shown} is a binary file; Read shows text files only")


def _numbered(path: Path, offset: int, limit: int) -> str:
    with path.open(encoding="utf-8", errors="replace", newline=None) as handle:
        lines = _lines(handle)
        shown = [
            f"{number:>6}\t{text}"
            for number, text in islice(enumerate(lines, start=1), offset - 1, offset - 1 + limit)
        ]
        more = next(lines, None) is not None
    if not shown:
        return (
            "(file is empty)" if offset == 1 else f"(offset {offset} is past the end of the file)"
        )
    if more:
        shown.append(f"(more lines follow; read on with offset={offset + len(shown)})")
    return "\n".join(shown)


def _lines(handle: Iterator[str]) -> Iterator[str]:
    for line in handle:
        text = line.rstrip("\n")
        yield text if len(text) <= MAX_LINE_CHARS else text[:MAX_LINE_CHARS] + " [line cut]"
