"""The tool base class, tool inputs as pydantic models, and the helpers the tools share.

A tool has Claude Code's name, a description and an input model (a :class:`ToolInput`
subclass). The one model serves twice: :func:`input_schema` turns it into the JSON
Schema sent to the model (``definition.input_schema``), and :meth:`BaseTool.parse`
validates what the model sends with it, so the schema the model sees and the check its
input meets cannot drift apart. ``run`` then gets the typed model instance and the task's
:class:`~worker.tools.sandbox.Sandbox`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import CoreSchema, ErrorDetails

from crewbox.errors import ToolError
from crewbox.llm.base import ToolDef
from worker.tools.sandbox import Sandbox

BINARY_SNIFF_BYTES = 8192
"""How many leading bytes are checked for a NUL byte to call a file binary."""


class ToolInput(BaseModel):
    """Base of every tool's input model.

    Strict, as the JSON Schema it produces promises: a string must be a string, an integer
    an integer (``true`` and ``2.5`` are not), a boolean a boolean; unknown keys are refused
    (``additionalProperties: false``). Parameter names that are not Python identifiers
    (Grep's ``-i``, ``-n``) are field aliases; only the alias is accepted.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


InputT = TypeVar("InputT", bound=ToolInput)


class _PlainSchema(GenerateJsonSchema):
    """The JSON Schema the Anthropic API takes for ``input_schema``: no ``title`` anywhere,
    no model docstring, optional parameters as their plain type (not ``anyOf`` with
    ``null``), no ``default: null``."""

    def generate(self, schema: CoreSchema, mode: JsonSchemaMode = "validation") -> JsonSchemaValue:
        result = super().generate(schema, mode)
        result.pop("title", None)
        result.pop("description", None)
        return result

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def nullable_schema(self, schema: Any) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: Any) -> JsonSchemaValue:
        result = super().default_schema(schema)
        if "default" in result and result["default"] is None:
            del result["default"]
        return result


def input_schema(model: type[ToolInput]) -> dict[str, Any]:
    """The JSON Schema of ``model`` as sent to the model: ``{"type": "object",
    "properties": {<Claude Code parameter name>: {"type", "description", ...}},
    "required": [...], "additionalProperties": false}`` (aliases as property names)."""
    return model.model_json_schema(by_alias=True, schema_generator=_PlainSchema)


class BaseTool(ABC, Generic[InputT]):
    """A tool the model may call; subclasses set the class attributes and ``run``.

    Attributes:
        name: Claude Code's tool name (``Read``, ``Write``...), also ``definition.name``.
        description: what the model is told the tool does.
        input_model: the pydantic model of the tool's input.
        definition: name, description and ``input_schema(input_model)``, built once when
            the subclass is defined.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    input_model: type[InputT]
    definition: ToolDef
    """Set on the class when it is defined; a tool whose description depends on its
    instance (Task lists the persona's sub-agents) sets its own in ``__init__``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.definition = ToolDef(
            name=cls.name, description=cls.description, input_schema=input_schema(cls.input_model)
        )

    def parse(self, raw: dict[str, Any]) -> InputT:
        """The model's arguments as the typed input.

        Raises:
            ToolError: one line naming the first bad parameter and the expected ones.
        """
        try:
            return self.input_model.model_validate(raw)
        except ValidationError as exc:
            raise ToolError(self._input_problem(exc)) from None

    @abstractmethod
    def run(self, input: InputT, sandbox: Sandbox) -> str:
        """Run one call and return the text the model sees.

        Args:
            input: the model's arguments, validated by ``input_model``.
            sandbox: the folders this task may read and write.

        Raises:
            ToolError: the call was refused (path outside the sandbox...) or failed.
        """

    def _input_problem(self, exc: ValidationError) -> str:
        errors = exc.errors(include_url=False)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"{self.name}: {_problem(errors[0])}{more}; parameters: {self._expected()}"

    def _expected(self) -> str:
        schema = self.definition.input_schema
        required = set(schema.get("required", []))
        names = [f"{n} (required)" if n in required else n for n in schema["properties"]]
        return ", ".join(names) or "none"


Tool = BaseTool[Any]
"""Any tool, whatever its input model (what tool lists hold)."""


def _problem(error: ErrorDetails) -> str:
    """One error of a ValidationError as ``missing parameter 'x'``, ``unknown parameter
    'x'`` or ``parameter 'x': <pydantic's message>, got <value>``."""
    where = ".".join(str(part) for part in error["loc"]) or "input"
    if error["type"] == "missing":
        return f"missing parameter {where!r}"
    if error["type"] == "extra_forbidden":
        return f"unknown parameter {where!r}"
    message = error["msg"][:1].lower() + error["msg"][1:]
    return f"parameter {where!r}: {message}, got {error['input']!r:.60}"


def is_binary(path: Path) -> bool:
    """True when the file's first ``BINARY_SNIFF_BYTES`` bytes contain a NUL byte.

    Raises:
        OSError: the file cannot be opened.
    """
    with path.open("rb") as handle:
        return b"\0" in handle.read(BINARY_SNIFF_BYTES)
