"""`ModelRegistry`: model names (``provider:model``) to models, built once and kept."""

from __future__ import annotations

import os
from collections.abc import Mapping

from mesh.errors import AuthFailedError, ProviderError
from mesh.llm.config import LLMConfig, ModelLimits
from mesh.llm.embeddings import Embedder, HashEmbedder, OpenAIEmbedder, split_embedder_name
from mesh.llm.model import Model, split_model_name
from mesh.llm.scripted import ScriptedModel

__all__ = ["OFFLINE_VARIABLE", "ModelRegistry"]

OFFLINE_VARIABLE = "MESH_LLM__OFFLINE"
"""Set (to 1/true) to refuse real providers, also for runtimes built in code (tests)."""


class ModelRegistry:
    """Builds each named model once, from the ``llm`` config or from what was registered.

    Args:
        config: The ``llm`` section of the mesh config.
        environ: Where `OFFLINE_VARIABLE` is read; defaults to ``os.environ``.
    """

    def __init__(
        self, config: LLMConfig | None = None, *, environ: Mapping[str, str] | None = None
    ) -> None:
        self._config = config or LLMConfig()
        flag = (os.environ if environ is None else environ).get(OFFLINE_VARIABLE, "")
        self._offline = self._config.offline or flag.lower() in {"1", "true", "yes"}
        self._models: dict[str, Model] = {}
        self._embedders: dict[str, Embedder] = {}

    def register(self, model: Model) -> None:
        """Make ``model`` answer to its name (e.g. a `ScriptedModel` built in a test)."""
        self._models[model.name] = model

    def get(self, name: str) -> Model:
        """The model called ``name``, built on first use.

        Raises:
            ValueError: The name is not ``provider:model``, or names an unknown provider or an
                undeclared scripted model or compatible server.
            AuthFailedError: Real providers are switched off (offline).
        """
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = self._build(name)
        return model

    def limits(self, agent: str) -> ModelLimits | None:
        """The limits on ``agent``'s model calls (``llm.limits``), or ``None`` if it has none."""
        return self._config.limits.get(agent)

    def register_embedder(self, embedder: Embedder) -> None:
        """Make ``embedder`` answer to its name (e.g. one built in a test)."""
        self._embedders[embedder.name] = embedder

    def embedder(self, name: str) -> Embedder:
        """The embedder called ``name`` (``hash``, ``hash:<dimensions>``, ``openai:<model>``),
        built on first use with the ``llm.openai`` settings.

        Raises:
            ValueError: Not an embedder name.
            AuthFailedError: Real providers are switched off, or OpenAI has no key.
        """
        embedder = self._embedders.get(name)
        if embedder is None:
            provider, model = split_embedder_name(name)
            if provider == "hash":
                embedder = HashEmbedder(int(model))
            elif self._offline:
                raise AuthFailedError(
                    f"real model providers are switched off ({OFFLINE_VARIABLE}): {name!r} "
                    "needs the hash embedder or one registered in code"
                )
            else:
                embedder = OpenAIEmbedder(model, self._config.openai)
            self._embedders[name] = embedder
        return embedder

    def _build(self, name: str) -> Model:
        provider, model = split_model_name(name)
        config = self._config
        if provider == "scripted":
            if model not in config.scripted:
                raise ValueError(
                    f"no scripted model {model!r}: declare llm.scripted.{model} in the config "
                    "or register a ScriptedModel"
                )
            return ScriptedModel(model, config.scripted[model])
        if provider not in ("openai", "anthropic", "openai-compatible"):
            raise ValueError(
                f"unknown provider {provider!r} in {name!r}: use openai, anthropic, "
                "openai-compatible or scripted"
            )
        if self._offline:
            raise AuthFailedError(
                f"real model providers are switched off ({OFFLINE_VARIABLE}): {name!r} needs "
                "a scripted model or one registered in code"
            )
        try:
            return _provider_model(provider, model, config)
        except ImportError as exc:  # pragma: no cover - the SDKs are dependencies
            raise ProviderError(f"the SDK for {provider!r} is not installed: {exc}") from exc


def _provider_model(provider: str, model: str, config: LLMConfig) -> Model:
    # Imported here: the SDKs take a while to import, and most nodes use one or none.
    if provider == "anthropic":
        from mesh.llm.anthropic import AnthropicModel

        return AnthropicModel(model, config.anthropic)
    from mesh.llm.openai import OpenAIModel

    if provider == "openai":
        return OpenAIModel(model, config.openai)
    if model not in config.compatible:
        raise ValueError(
            f"no OpenAI-compatible server {model!r}: declare llm.compatible.{model} "
            "with its base_url in the config"
        )
    server = config.compatible[model]
    return OpenAIModel(
        server.model or model,
        server,
        provider="openai-compatible",
        name=f"openai-compatible:{model}",
    )
