"""The ``llm`` section of the mesh config: providers, OpenAI-compatible servers, scripted
models, price overrides, and the limits of each agent's model calls."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mesh.llm.model import ProviderConfig
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedConfig

__all__ = ["CompatibleServer", "LLMConfig", "ModelLimits", "SpendLimit"]


class CompatibleServer(ProviderConfig):
    """An OpenAI-compatible server (Ollama, vLLM, llama.cpp) named ``openai-compatible:<key>``."""

    base_url: str
    """The server's OpenAI API root, e.g. ``http://localhost:11434/v1``."""
    model: str | None = None
    """The model id the server knows; defaults to the entry's key."""


class SpendLimit(BaseModel):
    """Most an agent may spend on model calls in a time window, over every node of the mesh."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """Most US dollars per window; a call of a model whose price is unknown is refused."""
    tokens: int | None = Field(default=None, ge=0)
    """Most tokens (input plus output) per window."""
    window: int = Field(default=3600, ge=1)
    """Seconds of a window; windows start at multiples of it in Unix time (3600: each hour
    on the hour)."""

    @model_validator(mode="after")
    def _limits_something(self) -> SpendLimit:
        if self.usd is None and self.tokens is None:
            raise ValueError("a spend limit needs `usd`, `tokens` or both")
        return self


class ModelLimits(BaseModel):
    """Limits on one agent's model calls (``llm.limits.<agent>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    max_prompt_tokens: int | None = Field(default=None, ge=1)
    """Largest prompt (system prompt, messages, tools and schema) a call may send, in tokens;
    a larger one is refused with ``payload_too_large`` before the provider sees it."""
    spend: SpendLimit | None = None
    """What the agent may spend per window, all its nodes together; a call that would go
    past it is refused with ``budget_exceeded``."""


class LLMConfig(BaseModel):
    """How agents reach models."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    openai: ProviderConfig = Field(default_factory=ProviderConfig)
    """``openai:<model>``; the key defaults to ``OPENAI_API_KEY``."""
    anthropic: ProviderConfig = Field(default_factory=ProviderConfig)
    """``anthropic:<model>``; the key defaults to ``ANTHROPIC_API_KEY``."""
    compatible: dict[str, CompatibleServer] = Field(default_factory=dict)
    """``openai-compatible:<key>`` models."""
    scripted: dict[str, ScriptedConfig] = Field(default_factory=dict)
    """``scripted:<key>`` models: offline, answering from a script."""
    prices: dict[str, Price] = Field(default_factory=dict)
    """Prices by ``provider:model``, over genai-prices' data (self-hosted, unlisted, scripted)."""
    limits: dict[str, ModelLimits] = Field(default_factory=dict)
    """Limits on the model calls of agents, by agent name: prompt size, spend per window."""
    offline: bool = False
    """Refuse every real provider (tests set ``MESH_LLM__OFFLINE=1``): only scripted models
    and models registered in code answer."""
