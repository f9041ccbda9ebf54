"""The LLM layer: one model interface, providers on their official SDKs, a scripted model for
offline use, and measurement of every call (tokens, cost, latency) that agents get for free.

Agents reach models through their context: ``await ctx.llm("openai:gpt-4o-mini", prompt)``
or ``ctx.model(name)``; the provider adapters (`mesh.llm.openai`, `mesh.llm.anthropic`) are
imported only when a model of theirs is first used.
"""

from mesh.llm.config import CompatibleServer, LLMConfig, ModelLimits, SpendLimit
from mesh.llm.generate import generate
from mesh.llm.guard import CallGuard
from mesh.llm.instrument import InstrumentedModel, LLMCall
from mesh.llm.model import Model, ProviderConfig
from mesh.llm.pricing import Price, PriceBook
from mesh.llm.registry import ModelRegistry
from mesh.llm.scripted import ScriptedConfig, ScriptedModel, ScriptedReply, ScriptRule
from mesh.llm.tokens import PromptCounter, estimate_prompt_tokens, prompt_tokens
from mesh.llm.types import (
    ChatMessage,
    Completed,
    ModelRequest,
    ModelResponse,
    StreamEvent,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolSpec,
)

__all__ = [
    "CallGuard",
    "ChatMessage",
    "CompatibleServer",
    "Completed",
    "InstrumentedModel",
    "LLMCall",
    "LLMConfig",
    "Model",
    "ModelLimits",
    "ModelRegistry",
    "ModelRequest",
    "ModelResponse",
    "Price",
    "PriceBook",
    "PromptCounter",
    "ProviderConfig",
    "ScriptRule",
    "ScriptedConfig",
    "ScriptedModel",
    "ScriptedReply",
    "SpendLimit",
    "StreamEvent",
    "TextDelta",
    "TokenUsage",
    "ToolCall",
    "ToolSpec",
    "estimate_prompt_tokens",
    "generate",
    "prompt_tokens",
]
