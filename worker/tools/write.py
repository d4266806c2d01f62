"""Write: create or overwrite a file in the sandbox (Claude Code's Write tool)."""

from __future__ import annotations

from typing import Any

from crewbox.errors import ToolError
from crewbox.llm.base import ToolDef
from worker.tools.sandbox import Sandbox


class WriteTool:
    """Write(file_path, content): write ``content`` as UTF-8, creating parent folders.

    Returns ``"Wrote <bytes> bytes to <absolute path>"``. Raises ToolError when the path is
    outside the sandbox or is a folder; OSError (permissions, disk full) is left to the caller.
    """

    name = "Write"
    definition = ToolDef(
        name="Write",
        description=(
            "Writes a file, replacing it if it exists and creating missing parent folders. "
            "Relative paths resolve against the working directory (your output folder: files "
            "written there are your artifacts)."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "file_path": {
                    "type": "string",
                    "description": "The path to the file to write (absolute, or relative to "
                    "the working directory)",
                },
                "content": {"type": "string", "description": "The content to write to the file"},
            },
            "required": ["file_path", "content"],
            "additionalProperties": False,
        },
    )

    def run(self, input: dict[str, Any], sandbox: Sandbox) -> str:
        """Write the file; see the class docstring."""
        path = sandbox.resolve(input["file_path"])
        if path.is_dir():
            raise ToolError(f"{sandbox.display(path)} is a directory; give a file path")
        data = input["content"].encode("utf-8")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"Wrote {len(data)} bytes to {sandbox.display(path)}"
