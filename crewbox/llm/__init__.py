"""LLM providers behind crewbox's narrow :class:`~crewbox.llm.base.LLMClient` protocol."""

from crewbox.llm.base import (
    ContentBlock,
    LLMClient,
    LLMResponse,
    Message,
    SystemBlock,
    TextBlock,
    ToolDef,
    ToolResultBlock,
    ToolUseBlock,
)

__all__ = [
    "ContentBlock",
    "LLMClient",
    "LLMResponse",
    "Message",
    "SystemBlock",
    "TextBlock",
    "ToolDef",
    "ToolResultBlock",
    "ToolUseBlock",
]
