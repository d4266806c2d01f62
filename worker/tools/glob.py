"""Glob: find files by name pattern (Claude Code's Glob tool), and the glob matcher.

Matching is wcmatch's (:func:`compile_glob`), on ``/``-separated paths relative to the
search folder, with the flags in ``GLOB_FLAGS``: ``*`` and ``?`` match within one path
segment, ``**`` as a whole segment matches any number of folders (none too, so
``**/*.md`` finds ``a.md`` at the top), ``[abc]``/``[!abc]`` match one character of a set,
``{a,b}`` expands to alternatives; ``*`` matches a leading dot too (hidden files are found,
as Claude Code's Glob and ripgrep's globs do). Extended globs (``+(a|b)``) and a leading
``!`` (negation) are not special. Grep's ``glob`` filter uses :func:`compile_glob` too.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from wcmatch import glob as wcglob
from wcmatch._wcparse import PatternLimitException  # raised past `limit`, not re-exported
from wcmatch.glob import WcMatcher

from crewbox.errors import ToolError
from worker.tools.base import BaseTool, ToolInput
from worker.tools.sandbox import Sandbox

MAX_RESULTS = 100
"""At most this many paths are listed (newest first); a note says when more matched."""

MAX_BRACE_ALTERNATIVES = 256
"""A pattern whose ``{a,b}`` groups expand to more alternatives than this is refused
(wcmatch's ``limit``)."""

GLOB_FLAGS = wcglob.GLOBSTAR | wcglob.BRACE | wcglob.DOTGLOB | wcglob.FORCEUNIX
"""wcmatch flags: ``**`` spans folders, ``{a,b}`` expands, ``*`` matches dotfiles, ``/``
is the separator on every OS."""


class GlobInput(ToolInput):
    """Glob's parameters (Claude Code's names)."""

    pattern: str = Field(description="The glob pattern to match files against")
    path: str | None = Field(
        default=None,
        description="The directory to search in. If not specified, the current working "
        "directory will be used. Omit this field to use the default directory. Must be a "
        "valid directory path if provided.",
    )


class GlobTool(BaseTool[GlobInput]):
    """Glob(pattern, path?): files under ``path`` (default: the working directory).

    Returns absolute paths, one a line, newest modification time first (at most
    ``MAX_RESULTS``), or ``"No files found"``. Only files whose real path is inside the
    sandbox are listed; symlinked folders are not entered.
    Raises ToolError for an absolute pattern, a ``..`` segment, a pattern expanding to more
    than ``MAX_BRACE_ALTERNATIVES``, or a ``path`` outside the sandbox or not a folder.
    """

    name = "Glob"
    description = (
        'Fast file pattern matching. Supports glob patterns like "**/*.md" or '
        '"src/**/*.{py,txt}". Returns matching file paths sorted by modification time, '
        "newest first."
    )
    input_model = GlobInput

    def run(self, input: GlobInput, sandbox: Sandbox) -> str:
        """List the matching files; see the class docstring."""
        top = resolve_folder_or_file(input.path, sandbox)
        if not top.is_dir():
            raise ToolError(f"{sandbox.display(top)} is not a directory")
        matcher = compile_glob(_relative_pattern(input.pattern))
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


def compile_glob(pattern: str) -> WcMatcher[str]:
    """Compile a glob pattern (see the module docstring); ``.match(path)`` is True for a
    matching ``/``-separated path relative to the search folder.

    Raises:
        ToolError: the pattern expands to more than ``MAX_BRACE_ALTERNATIVES`` alternatives.
    """
    try:
        return wcglob.compile(pattern, flags=GLOB_FLAGS, limit=MAX_BRACE_ALTERNATIVES)
    except PatternLimitException as exc:
        raise ToolError(
            f"glob {pattern!r} expands to more than {MAX_BRACE_ALTERNATIVES} alternatives; "
            "simplify it"
        ) from exc


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
