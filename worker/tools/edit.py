"""Edit: replace an exact string in a file (Claude Code's Edit tool)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from crewbox.errors import ToolError
from worker.tools.base import BaseTool, ToolInput
from worker.tools.sandbox import Sandbox


class EditInput(ToolInput):
    """Edit's parameters (Claude Code's names)."""

    file_path: str = Field(
        description="The path to the file to modify (absolute, or relative to the working "
        "directory)"
    )
    old_string: str = Field(description="The text to replace")
    new_string: str = Field(
        description="The text to replace it with (must be different from old_string)"
    )
    replace_all: bool = Field(
        default=False, description="Replace all occurrences of old_string (default false)"
    )


class EditTool(BaseTool[EditInput]):
    """Edit(file_path, old_string, new_string, replace_all?=false): exact string replacement.

    ``old_string`` must occur exactly once, or at least once with ``replace_all``. An empty
    ``old_string`` creates a file that does not exist yet (or fills an empty one) with
    ``new_string``. Line endings and encoding (UTF-8) are kept. Returns
    ``"Edited <path>: replaced <n> occurrence(s)"``.

    Raises ToolError when the path is outside the sandbox or in the read-only workspace,
    the file is missing or not UTF-8 text, ``old_string`` equals ``new_string``, is not
    found, or is found more than once without ``replace_all``; the file is then left
    unchanged.
    """

    name = "Edit"
    description = (
        "Performs an exact string replacement in a file. old_string must match the file "
        "exactly (whitespace included) and occur once, unless replace_all is true."
    )
    input_model = EditInput

    def run(self, input: EditInput, sandbox: Sandbox) -> str:
        """Apply the replacement; see the class docstring."""
        path = sandbox.resolve_writable(input.file_path)
        old, new = input.old_string, input.new_string
        if old == new:
            raise ToolError("old_string and new_string are the same; nothing to change")
        text = _read_text(path, sandbox) if path.exists() or old else ""
        updated, count = _replace(text, old, new, input.replace_all)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(updated, encoding="utf-8", newline="")
        return f"Edited {sandbox.display(path)}: replaced {count} occurrence(s)"


def _read_text(path: Path, sandbox: Sandbox) -> str:
    shown = sandbox.display(path)
    if path.is_dir():
        raise ToolError(f"{shown} is a directory; give a file path")
    if not path.is_file():
        raise ToolError(f"file {shown} does not exist; use Write to create it")
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return handle.read()
    except UnicodeDecodeError as exc:
        raise ToolError(f"{shown} is not UTF-8 text; Edit changes text files only") from exc


def _replace(text: str, old: str, new: str, replace_all: bool) -> tuple[str, int]:
    if not old:
        if text:
            raise ToolError("old_string is empty but the file is not; quote the text to replace")
        return new, 1
    count = text.count(old)
    if count == 0:
        raise ToolError("old_string not found in the file; Read it and copy the text exactly")
    if count > 1 and not replace_all:
        raise ToolError(
            f"old_string occurs {count} times; add surrounding context to make it unique, "
            "or set replace_all to true"
        )
    return text.replace(old, new), count
