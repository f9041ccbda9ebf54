"""The ``llm`` section of the mesh config: providers, OpenAI-compatible servers, scripted
models and price overrides."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mesh.llm.model import ProviderConfig
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedConfig

__all__ = ["CompatibleServer", "LLMConfig"]


class CompatibleServer(ProviderConfig):
    """An OpenAI-compatible server (Ollama, vLLM, llama.cpp) named ``openai-compatible:<key>``."""

    base_url: str
    """The server's OpenAI API root, e.g. ``http://localhost:11434/v1``."""
    model: str | None = None
    """The model id the server knows; defaults to the entry's key."""


class LLMConfig(BaseModel):
    """How agents reach models."""

    model_config = ConfigDict(extra="forbid")

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
    offline: bool = False
    """Refuse every real provider (tests set ``MESH_LLM__OFFLINE=1``): only scripted models
    and models registered in code answer."""
