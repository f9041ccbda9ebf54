"""What a model call cost: `genai-prices` data (offline, cache-aware) plus a table of overrides.

An unknown model is priced ``None`` (never a silent zero) and warned about once per book.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import genai_prices
from pydantic import BaseModel, ConfigDict, Field

from mesh.llm.types import TokenUsage

__all__ = ["Price", "PriceBook"]

_log = logging.getLogger("mesh.llm")
_MILLION = 1_000_000


class Price(BaseModel):
    """A price override, in US dollars per million tokens (``llm.prices`` in the config)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    input: float = Field(ge=0)
    """Per million input tokens that were not read from a cache."""
    output: float = Field(ge=0)
    """Per million output tokens."""
    cached_input: float | None = Field(default=None, ge=0)
    """Per million input tokens read from a cache; ``None`` charges them as ``input``."""

    def cost(self, usage: TokenUsage) -> float:
        """The cost of ``usage`` at this price."""
        cached = usage.cached_tokens if self.cached_input is not None else 0
        fresh = usage.input_tokens - cached
        return (
            fresh * self.input
            + cached * (self.cached_input or 0.0)
            + usage.output_tokens * self.output
        ) / _MILLION


class PriceBook:
    """Prices model calls: the overrides first, then genai-prices' data.

    Args:
        overrides: Prices by ``provider:model`` name, for self-hosted or unlisted models.
    """

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._overrides = dict(overrides or {})
        self._warned: set[str] = set()

    def cost(self, model: str, usage: TokenUsage) -> float | None:
        """US dollars for ``usage`` on ``model`` (``provider:model``), or ``None`` if unknown."""
        override = self._overrides.get(model)
        if override is not None:
            return override.cost(usage)
        provider, _, model_id = model.partition(":")
        try:
            price = genai_prices.calc_price(
                genai_prices.Usage(
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cache_read_tokens=usage.cached_tokens,
                    cache_write_tokens=usage.cache_write_tokens,
                ),
                model_id,
                provider_id=provider,
            )
        except LookupError:
            if model not in self._warned:
                self._warned.add(model)
                _log.warning(
                    "no price known for %r: its calls are counted with cost unknown "
                    "(add it to llm.prices in the config)",
                    model,
                )
            return None
        return float(price.total_price)
