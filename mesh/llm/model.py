"""The `Model` seam: one async interface for chat completion, whatever the provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from pydantic import BaseModel, ConfigDict, SecretStr

from mesh.llm.types import ModelRequest, ModelResponse, StreamEvent

__all__ = ["Model", "ProviderConfig", "split_model_name"]


class ProviderConfig(BaseModel):
    """How to reach one provider (the ``llm.providers`` section of the config)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    api_key: SecretStr | None = None
    """The key; ``None`` reads the provider's usual variable (``OPENAI_API_KEY``, ...)."""
    base_url: str | None = None
    """The API's URL; needed for an OpenAI-compatible server (Ollama, vLLM, llama.cpp)."""
    timeout: float = 60.0
    """Seconds for one HTTP request."""
    max_retries: int = 2
    """Retries of retryable failures (rate limits, timeouts, 5xx), with backoff that honours
    ``Retry-After``; done by the provider's SDK."""


class Model(Protocol):
    """A chat model. Every method translates the provider's failures into mesh errors.

    Raises (each method):
        RateLimitedError: The provider asked to slow down (after the SDK's own retries).
        MeshTimeoutError: The provider did not answer in time.
        AuthFailedError: The key is missing or refused.
        ProviderError: Anything else from the provider: a bad request (not retryable), a
            server error or a malformed answer (retryable).
    """

    @property
    def name(self) -> str:
        """``provider:model``, as the mesh names it (e.g. ``openai:gpt-4o-mini``)."""
        ...

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer ``request`` in one piece."""
        ...

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        """Answer ``request`` as text deltas, then one `Completed` with the whole response."""
        ...


def split_model_name(name: str) -> tuple[str, str]:
    """``"openai:gpt-4o-mini"`` → ``("openai", "gpt-4o-mini")``.

    Raises:
        ValueError: The name has no ``provider:`` part or no model part.
    """
    provider, sep, model = name.partition(":")
    if not sep or not provider or not model:
        raise ValueError(
            f"model names are 'provider:model' (e.g. 'openai:gpt-4o-mini'), not {name!r}"
        )
    return provider, model
