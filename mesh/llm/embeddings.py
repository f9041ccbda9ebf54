"""Embeddings: the `Embedder` seam, OpenAI's embeddings API, and an offline `HashEmbedder`.

Embedders are named like models: ``openai:text-embedding-3-small``, ``hash`` (or
``hash:<dimensions>``). `MeasuredEmbedder` turns each call into `Usage` (one call, its
tokens, its cost from the `PriceBook`) and hands it to a callback, e.g. ``ctx.add_usage``.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mesh.envelope import Usage
from mesh.errors import AuthFailedError, ProviderError
from mesh.llm.model import ProviderConfig, split_model_name
from mesh.llm.pricing import PriceBook
from mesh.llm.types import TokenUsage

if TYPE_CHECKING:
    import httpx2
    import openai

__all__ = [
    "DEFAULT_HASH_DIMENSIONS",
    "Embedder",
    "Embeddings",
    "HashEmbedder",
    "MeasuredEmbedder",
    "OpenAIEmbedder",
    "check_embedder_name",
    "split_embedder_name",
]

DEFAULT_HASH_DIMENSIONS = 256
"""Dimensions of ``hash`` without a number."""

_WORD = re.compile(r"\w+")


class Embeddings(BaseModel):
    """The vectors of some texts, one per text in the same order."""

    model_config = ConfigDict(frozen=True)

    vectors: list[list[float]]
    """One vector per text."""
    input_tokens: int = 0
    """Tokens the provider counted (and bills); 0 for a local embedder."""


class Embedder(Protocol):
    """Turns texts into vectors. ``embed`` translates the provider's failures into mesh errors.

    Raises (``embed``):
        RateLimitedError: The provider asked to slow down (after the SDK's own retries).
        MeshTimeoutError: The provider did not answer in time.
        AuthFailedError: The key is missing or refused.
        ProviderError: Anything else from the provider (a bad request is not retryable).
    """

    @property
    def name(self) -> str:
        """``provider:model``, e.g. ``openai:text-embedding-3-small`` or ``hash:256``."""
        ...

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        """The vectors of ``texts``, in the same order (one request to the provider)."""
        ...


class HashEmbedder:
    """Deterministic offline embeddings, for tests and demos: a hashed bag of words.

    Each lower-cased word is hashed (BLAKE2b, so the same in every process) to one of
    ``dimensions`` slots and a sign; the counts are L2-normalised. Texts that share words are
    close, with no notion of meaning. Costs nothing, so it reports no tokens.

    Args:
        dimensions: Length of the vectors.

    Raises:
        ValueError: ``dimensions`` is below 1.
    """

    def __init__(self, dimensions: int = DEFAULT_HASH_DIMENSIONS) -> None:
        if dimensions < 1:
            raise ValueError(f"a hash embedder needs at least one dimension, not {dimensions}")
        self._dimensions = dimensions

    @property
    def name(self) -> str:
        return f"hash:{self._dimensions}"

    def __repr__(self) -> str:
        return f"HashEmbedder(dimensions={self._dimensions})"

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        return Embeddings(vectors=[self._vector(text) for text in texts])

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self._dimensions
        for word in _WORD.findall(text.lower()):
            digest = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
            vector[digest % self._dimensions] += 1.0 if digest >> 63 else -1.0
        norm = math.sqrt(sum(value * value for value in vector))
        return [value / norm for value in vector] if norm else vector


class OpenAIEmbedder:
    """OpenAI's embeddings API (or a server that speaks it at ``config.base_url``).

    Args:
        model: The model id, e.g. ``text-embedding-3-small``.
        config: Key, URL, timeout and retries; a ``None`` key reads ``OPENAI_API_KEY``.
        dimensions: Shorter vectors, for the models that take it (``text-embedding-3-*``).
        http_client: The SDK's HTTP client, e.g. with a mock transport; the embedder closes it.

    Raises:
        AuthFailedError: No key, in the config or the environment.
    """

    def __init__(
        self,
        model: str,
        config: ProviderConfig,
        *,
        dimensions: int | None = None,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        import openai  # here: the SDK takes most of a second to import, and few nodes embed

        self._model = model
        self._dimensions = dimensions
        key = config.api_key.get_secret_value() if config.api_key is not None else None
        try:
            self._client: openai.AsyncOpenAI = openai.AsyncOpenAI(
                api_key=key,
                base_url=config.base_url,
                timeout=config.timeout,
                max_retries=config.max_retries,
                http_client=http_client,
            )
        except openai.OpenAIError as exc:
            raise AuthFailedError(
                f"{self.name}: no API key (set OPENAI_API_KEY or the provider's api_key)"
            ) from exc
        self._secrets = tuple(s for s in (key, self._client.api_key) if s)

    @property
    def name(self) -> str:
        """``openai:<model>``."""
        return f"openai:{self._model}"

    def __repr__(self) -> str:
        return f"OpenAIEmbedder({self.name!r})"

    async def aclose(self) -> None:
        """Close the HTTP client (and its connections)."""
        await self._client.close()

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        """The vectors of ``texts`` in one request (none for no texts: the API refuses them).

        Raises:
            MeshError: As `Embedder` says; a malformed answer is a retryable `ProviderError`.
        """
        import openai

        from mesh.llm.openai import translate_error

        if not texts:
            return Embeddings(vectors=[])
        try:
            raw = await self._client.embeddings.create(
                model=self._model,
                input=list(texts),
                dimensions=openai.omit if self._dimensions is None else self._dimensions,
            )
            answer = _Answer.model_validate(raw, from_attributes=True)
        # ValueError: the SDK's own check of the answer ("No embedding data received").
        except (openai.OpenAIError, ValidationError, ValueError) as exc:
            raise translate_error(exc, self.name, self._secrets) from exc
        items = sorted(answer.data, key=lambda item: item.index)
        if [item.index for item in items] != list(range(len(texts))):
            raise ProviderError(
                f"{self.name}: malformed response ({len(items)} embeddings for {len(texts)} texts)",
                retryable=True,
            )
        return Embeddings(
            vectors=[item.embedding for item in items], input_tokens=answer.usage.prompt_tokens
        )


class MeasuredEmbedder:
    """An embedder whose every successful call is counted: one call, its tokens and its cost.

    A failed call costs nothing and is not counted, as for model calls.

    Args:
        inner: The embedder that answers.
        prices: Prices the tokens (an unknown price makes the cost ``None``); a call with no
            tokens (a local embedder) costs ``0.0`` without a look-up.
        on_usage: Receives each call's `Usage`, e.g. ``ctx.add_usage``.
    """

    def __init__(
        self, inner: Embedder, prices: PriceBook, on_usage: Callable[[Usage], None]
    ) -> None:
        self._inner = inner
        self._prices = prices
        self._on_usage = on_usage

    @property
    def name(self) -> str:
        return self._inner.name

    def __repr__(self) -> str:
        return f"MeasuredEmbedder({self._inner.name!r})"

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        embeddings = await self._inner.embed(texts)
        tokens = embeddings.input_tokens
        cost = self._prices.cost(self.name, TokenUsage(input_tokens=tokens)) if tokens else 0.0
        self._on_usage(Usage(input_tokens=tokens, cost_usd=cost, calls=1))
        return embeddings


def check_embedder_name(name: str) -> str:
    """``name`` if it is an embedder name the registry knows (nothing is built, no key needed).

    Raises:
        ValueError: It does not.
    """
    split_embedder_name(name)
    return name


def split_embedder_name(name: str) -> tuple[str, str]:
    """``hash`` → ``("hash", "256")``; ``openai:<model>`` → ``("openai", model)``.

    Raises:
        ValueError: Not an embedder name: ``hash``, ``hash:<dimensions>``, ``openai:<model>``.
    """
    if name == "hash":
        return "hash", str(DEFAULT_HASH_DIMENSIONS)
    provider, model = split_model_name(name)
    if provider == "hash" and not (model.isdigit() and int(model) > 0):
        raise ValueError(f"hash embedders are 'hash' or 'hash:<dimensions>', not {name!r}")
    if provider not in ("hash", "openai"):
        raise ValueError(f"unknown embedder provider {provider!r} in {name!r}: use openai or hash")
    return provider, model


class _Wire(BaseModel):
    """Reads the SDK's objects, checking the shape of what is used and nothing else."""

    model_config = ConfigDict(from_attributes=True)


class _Item(_Wire):
    index: int
    embedding: list[float]


class _Tokens(_Wire):
    prompt_tokens: int = 0


class _Answer(_Wire):
    data: list[_Item] = Field(min_length=1)
    usage: _Tokens = Field(default_factory=_Tokens)
