"""The Tool protocol and the small helpers the tools share.

A tool has Claude Code's name and input schema (its ``definition``, sent to the model) and a
``run`` method that gets the model's input, already checked by :func:`validate_input`, and
the task's :class:`~worker.tools.sandbox.Sandbox`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from crewbox.errors import ToolError
from crewbox.llm.base import ToolDef
from worker.tools.sandbox import Sandbox

BINARY_SNIFF_BYTES = 8192
"""How many leading bytes are checked for a NUL byte to call a file binary."""

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


class Tool(Protocol):
    """A tool the model may call.

    Attributes:
        name: Claude Code's tool name (``Read``, ``Write``...), also ``definition.name``.
        definition: name, short description and JSON Schema ``input_schema`` for the model.
    """

    name: str
    definition: ToolDef

    def run(self, input: dict[str, Any], sandbox: Sandbox) -> str:
        """Run one call and return the text the model sees.

        Args:
            input: the model's arguments, already checked against ``definition.input_schema``.
            sandbox: the folders this task may touch.

        Raises:
            ToolError: the call was refused (path outside the sandbox...) or failed.
        """
        ...


def validate_input(definition: ToolDef, input: dict[str, Any]) -> None:
    """Check ``input`` against the simple JSON Schema subset the tools use.

    Checks: required keys present, no unknown keys (when ``additionalProperties`` is false),
    basic types (``string``, ``integer``, ``number``, ``boolean``, ``array``, ``object``;
    a bool is never a number) and ``enum`` values.

    Raises:
        ToolError: one line naming the first problem and the expected parameters.
    """
    schema = definition.input_schema
    properties: dict[str, Any] = schema.get("properties", {})
    expected = ", ".join(properties) or "none"
    for key in schema.get("required", []):
        if key not in input:
            raise ToolError(f"{definition.name}: missing parameter {key!r}; expected: {expected}")
    for key, value in input.items():
        if key not in properties:
            if schema.get("additionalProperties", True) is False:
                raise ToolError(f"{definition.name}: unknown parameter {key!r}; known: {expected}")
            continue
        problem = _value_problem(properties[key], value)
        if problem:
            raise ToolError(f"{definition.name}: parameter {key!r} {problem}")


def _value_problem(prop: dict[str, Any], value: Any) -> str | None:
    json_type = prop.get("type")
    if isinstance(json_type, str) and json_type in _JSON_TYPES:
        is_bool = isinstance(value, bool)
        if not isinstance(value, _JSON_TYPES[json_type]) or (is_bool and json_type != "boolean"):
            return f"must be a {json_type}, got {type(value).__name__} {value!r:.60}"
    if "enum" in prop and value not in prop["enum"]:
        choices = ", ".join(repr(choice) for choice in prop["enum"])
        return f"must be one of {choices}, got {value!r:.60}"
    return None


def int_input(input: dict[str, Any], key: str, default: int) -> int:
    """Read an optional whole number (JSON ``number``) from ``input``; ``default`` when absent.

    Raises:
        ToolError: the value is not a whole number (``2.5``, ``"3"``, ``true``).
    """
    value = input.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError(f"parameter {key!r} must be a whole number, got {value!r:.60}")
    if isinstance(value, float) and not value.is_integer():
        raise ToolError(f"parameter {key!r} must be a whole number, got {value!r}")
    return int(value)


def is_binary(path: Path) -> bool:
    """True when the file's first ``BINARY_SNIFF_BYTES`` bytes contain a NUL byte.

    Raises:
        OSError: the file cannot be opened.
    """
    with path.open("rb") as handle:
        return b"\0" in handle.read(BINARY_SNIFF_BYTES)
