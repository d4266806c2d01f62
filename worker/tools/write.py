"""Write: create or overwrite a file in the output folder (Claude Code's Write tool)."""

from __future__ import annotations

from pydantic import Field

from crewbox.errors import ToolError
from worker.tools.base import BaseTool, ToolInput
from worker.tools.sandbox import Sandbox


class WriteInput(ToolInput):
    """Write's parameters (Claude Code's names)."""

    file_path: str = Field(
        description="The path to the file to write (absolute, or relative to the working directory)"
    )
    content: str = Field(description="The content to write to the file")


class WriteTool(BaseTool[WriteInput]):
    """Write(file_path, content): write ``content`` as UTF-8, creating parent folders.

    Returns ``"Wrote <bytes> bytes to <absolute path>"``. Raises ToolError when the path is
    outside the sandbox, in the read-only workspace, or is a folder; OSError (permissions,
    disk full) is left to the caller.
    """

    name = "Write"
    description = (
        "Writes a file, replacing it if it exists and creating missing parent folders. "
        "Relative paths resolve against the working directory (your output folder: files "
        "written there are your artifacts; the workspace is read-only)."
    )
    input_model = WriteInput

    def run(self, input: WriteInput, sandbox: Sandbox) -> str:
        """Write the file; see the class docstring."""
        path = sandbox.resolve_writable(input.file_path)
        if path.is_dir():
            raise ToolError(f"{sandbox.display(path)} is a directory; give a file path")
        data = input.content.encode("utf-8")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"Wrote {len(data)} bytes to {sandbox.display(path)}"
