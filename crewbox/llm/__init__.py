"""LLM providers behind crewbox's narrow :class:`~crewbox.llm.base.LLMClient` protocol."""

from crewbox.llm.base import (
    ContentBlock,
    LLMClient,
    LLMResponse,
    Message,
    RedactedThinkingBlock,
    SystemBlock,
    TextBlock,
    ThinkingBlock,
    ToolDef,
    ToolResultBlock,
    ToolUseBlock,
)

__all__ = [
    "ContentBlock",
    "LLMClient",
    "LLMResponse",
    "Message",
    "RedactedThinkingBlock",
    "SystemBlock",
    "TextBlock",
    "ThinkingBlock",
    "ToolDef",
    "ToolResultBlock",
    "ToolUseBlock",
]
