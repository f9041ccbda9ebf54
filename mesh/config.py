"""Configuration: the YAML file, ``MESH_*`` variables and CLI overrides, validated as `MeshConfig`.

Precedence, highest first: overrides (CLI flags), ``MESH_*`` variables (``__`` nests, e.g.
``MESH_AGENTS__ECHO__TIMEOUT``; names are matched case-insensitively, so an agent reached this
way has a lower-case name), ``NATS_URL`` and the nats CLI's credential variables (``bus`` only,
see `mesh._bus_settings`), the file, the defaults. Loading either returns a complete, valid
config or raises one `ConfigError` listing every problem with where it came from: the file and
line of the key, or the variable.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic.json_schema import SkipJsonSchema
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from mesh._bus_settings import ClientName, lift_url_credentials, nats_environment
from mesh._config_sources import (
    ENV_PREFIX,
    ConfigError,
    ConfigProblem,
    Loc,
    closest,
    env_names,
    merge,
    paths,
    read_yaml,
)
from mesh.agent import Agent
from mesh.bus.auth import NatsAuth
from mesh.delivery import Delivery, DurableSettings, RetryPolicy
from mesh.errors import UnknownAgentError
from mesh.limits import RateLimit
from mesh.llm.config import LLMConfig
from mesh.refs import REFERENCES, AgentRef, Pieces, References
from mesh.subjects import validate_agent_name
from mesh.tracing import TracingConfig

__all__ = [
    "BUILTIN_KINDS",
    "AgentSpec",
    "BusConfig",
    "ConfigError",
    "ConfigProblem",
    "Defaults",
    "MeshConfig",
    "config_json_schema",
    "load_config",
    "reference_cycles",
    "resolve_kind",
]

BUILTIN_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "aggregator": "agents.aggregator:AggregatorAgent",
        "classifier": "agents.classifier:ClassifierAgent",
        "critic": "agents.critic:CriticAgent",
        "echo": "agents.echo:EchoAgent",
        "llm": "agents.llm:LLMAgent",
        "planner": "agents.planner:PlannerAgent",
        "react": "agents.react:ReactAgent",
        "retriever": "agents.retriever:RetrieverAgent",
        "upper": "agents.upper:UpperAgent",
        "debate": "patterns.debate:DebatePattern",
        "ensemble": "patterns.ensemble:EnsemblePattern",
        "hierarchical": "patterns.hierarchical:HierarchicalPattern",
        "map_reduce": "patterns.map_reduce:MapReducePattern",
        "parallel": "patterns.parallel:ParallelPattern",
        "plan_execute": "patterns.plan_execute:PlanExecutePattern",
        "rag": "patterns.rag:RagPattern",
        "reflection": "patterns.reflection:ReflectionPattern",
        "router": "patterns.router:RouterPattern",
        "sequential": "patterns.sequential:SequentialPattern",
        "supervisor": "patterns.supervisor:SupervisorPattern",
        "swarm": "patterns.swarm:SwarmPattern",
    }
)
"""Short names of the built-in agent and pattern kinds, and the ``module:Class`` of each."""

_Where = Callable[[Loc], tuple[str | None, int | None]]
"""Where a value at a key path came from: (file or ``$VARIABLE``, line)."""


def resolve_kind(kind: str) -> type[Agent[Any]]:
    """Return the agent class a ``kind`` names.

    Args:
        kind: A key of `BUILTIN_KINDS`, or ``"package.module:ClassName"``.

    Returns:
        The class, a subclass of `Agent`.

    Raises:
        ValueError: The kind is unknown, its module cannot be imported, or it names something
            that is not an `Agent` subclass.
    """
    target = BUILTIN_KINDS.get(kind, kind)
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        builtins = ", ".join(sorted(BUILTIN_KINDS))
        raise ValueError(f"unknown kind {kind!r}: use one of {builtins} or 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"kind {kind!r}: cannot import module {module_name!r} ({exc})") from exc
    found = getattr(module, attr, None)
    if found is None:
        raise ValueError(f"kind {kind!r}: module {module_name!r} has no {attr!r}")
    if not (isinstance(found, type) and issubclass(found, Agent)):
        raise ValueError(f"kind {kind!r}: {target!r} is not an Agent subclass")
    return found


class Defaults(BaseModel):
    """Limits for every agent that does not set its own."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    timeout: float = Field(default=60.0, gt=0)
    """Seconds an agent may work on a task that carries no deadline."""
    max_concurrency: int = Field(default=16, ge=1)
    """Tasks one node runs at once; above it, messages wait."""
    max_message_bytes: int = Field(default=1_048_576, ge=1)
    """Largest incoming task accepted, in bytes."""
    max_depth: int = Field(default=32, ge=1)
    """Longest call path (agents above a task, the caller included); deeper tasks are refused
    with ``depth_exceeded``: the guard against cycles (A calls B calls A ...)."""
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    """How callers retry a failed try of a call (``no_responders``, an idempotent call's
    ``timeout``, retryable errors listed in ``retry_on``), with backoff, within the deadline."""
    delivery: Delivery = Delivery.CORE
    """How tasks reach agents: ``core`` (request/reply, at most once) or ``durable`` (a
    JetStream work queue, at least once; needs NATS with JetStream)."""
    durable: DurableSettings = Field(default_factory=DurableSettings)
    """Tries, node silence, result retention and deduplication of durable tasks."""


class BusConfig(NatsAuth):
    """Where the mesh's messages travel, and who this process is to NATS.

    The credentials and TLS (`NatsAuth`: ``user``/``password``, ``token``, ``nkey_seed_file``,
    ``creds_file``, ``tls``) come from here, ``MESH_BUS__*`` or the nats CLI's variables
    (`mesh._bus_settings.NATS_VARIABLES`); secrets show as ``**********`` everywhere.
    """

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, hide_input_in_errors=True
    )

    url: str | None = None
    """NATS server URL (several may be given, comma separated); ``None`` is the in-memory bus.
    A ``user:password@`` (or ``token@``) in it is moved to ``user`` and ``password`` (``token``)."""
    name: str | None = None
    """Connection name the server shows for this client."""
    clients: dict[ClientName, list[AgentRef]] | None = None
    """For ``mesh nats-config``: the programs outside the mesh that call it, each with the
    agents it may call; ``None``: one, ``default``, that may call ``entry`` (or every agent)."""

    @model_validator(mode="before")
    @classmethod
    def _credentials_out_of_url(cls, data: Any) -> Any:
        return lift_url_credentials(data)


class AgentSpec(BaseModel):
    """One agent of the mesh; keys beyond the common ones are the settings of its kind."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    kind: str
    """A builtin short name (``echo``, ``upper``) or ``"package.module:ClassName"``."""
    description: str | None = None
    """One line saying what it does; replaces the class's own."""
    max_concurrency: int | None = Field(default=None, ge=1)
    """Tasks one node runs at once; ``None`` is ``defaults.max_concurrency``."""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds per task without a deadline; ``None`` is ``defaults.timeout``."""
    replicas: int = Field(default=1, ge=1)
    """How many node processes ``mesh up`` starts."""
    delivery: Delivery | None = None
    """``core`` or ``durable``; ``None`` is ``defaults.delivery``."""
    retry: RetryPolicy | None = None
    """How callers retry calls to this agent; ``None`` is ``defaults.retry``."""
    idempotent: bool = False
    """Running a task twice does no harm (no side effects, or its own guard on
    ``ctx.task.idempotency_key``): a try that timed out may be tried again."""
    max_deliver: int | None = Field(default=None, ge=1)
    """Tries of a durable task; ``None`` is ``defaults.durable.max_deliver``."""
    ack_wait: float | None = Field(default=None, ge=1)
    """Seconds of node silence before a durable task is tried elsewhere; ``None`` is
    ``defaults.durable.ack_wait``."""
    rate_limit: RateLimit | None = None
    """Most tasks a node of this agent takes (``{per_second, burst?}``); a task above it is
    answered ``rate_limited`` (retryable) without running. ``None``: no limit."""

    @field_validator("kind")
    @classmethod
    def _kind_resolves(cls, kind: str) -> str:
        resolve_kind(kind)
        return kind

    _config: BaseModel = PrivateAttr()
    _references: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _settings_fit_kind(self, info: ValidationInfo) -> AgentSpec:
        # A ValidationError raised here keeps its locations, nested under this agent.
        self._config, self._references = _validate_settings(self.kind, self.settings, info.context)
        return self

    @property
    def settings(self) -> dict[str, Any]:
        """The keys beyond the common ones: settings for the kind's ``config_model``."""
        return dict(self.model_extra or {})

    @property
    def config(self) -> BaseModel:
        """The settings, validated by the kind's ``config_model``."""
        return self._config

    @property
    def references(self) -> tuple[str, ...]:
        """The agents the settings name (that this agent calls), in order."""
        return self._references


def _validate_settings(
    kind: str, settings: Mapping[str, Any], context: Any
) -> tuple[BaseModel, tuple[str, ...]]:
    """The kind's config from ``settings``, and the agents they name.

    ``context`` may carry the `References` of the whole config (declared agents, pieces).
    """
    given = context.get(REFERENCES) if isinstance(context, dict) else None
    own = References(
        agents=given.agents if isinstance(given, References) else None,
        pieces=given.pieces if isinstance(given, References) else None,
    )
    model = resolve_kind(kind).config_model
    shadowed = sorted(set(model.model_fields) & (set(AgentSpec.model_fields) - {"kind"}))
    if shadowed:  # the agent keys would take these values: the kind could never see them
        raise ValueError(
            f"kind {kind!r} has settings named like the keys every agent has ({shadowed}): "
            "they cannot be set; the kind must rename them"
        )
    config = model.model_validate(settings, context={REFERENCES: own})
    return config, tuple(own.found)


def _check_entry(entry: str, agents: Iterable[str]) -> None:
    names = sorted(agents)
    if entry not in names:
        raise ValueError(f"entry {entry!r} is not a declared agent (declared: {names})")


class MeshConfig(BaseModel):
    """The whole mesh: bus, defaults and agents, as loaded by `load_config`."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    bus: BusConfig = Field(default_factory=BusConfig)
    """The message bus."""
    defaults: Defaults = Field(default_factory=Defaults)
    """Limits for agents that set none."""
    agents: dict[Annotated[str, AfterValidator(validate_agent_name)], AgentSpec] = Field(
        default_factory=dict
    )
    """The agents, by the name they are called by."""
    entry: str | None = None
    """The agent ``make demo`` and ``mesh run`` call; must be one of ``agents``."""
    llm: LLMConfig = Field(default_factory=LLMConfig)
    """How agents reach models: providers, OpenAI-compatible servers, scripted models, prices."""
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    """Where spans go: an OpenTelemetry exporter, Langfuse; off by default."""
    source: SkipJsonSchema[str | None] = Field(default=None, exclude=True)
    """Path of the file it was loaded from, for messages; set by `load_config`."""

    @field_validator("entry")
    @classmethod
    def _entry_declared(cls, entry: str | None, info: ValidationInfo) -> str | None:
        if entry is not None and "agents" in info.data:  # absent: agents failed, reported there
            _check_entry(entry, info.data["agents"])
        return entry

    @field_validator("llm")
    @classmethod
    def _limits_fit(cls, llm: LLMConfig, info: ValidationInfo) -> LLMConfig:
        agents = info.data.get("agents")
        unknown = sorted(set(llm.limits) - set(agents)) if agents else []
        if unknown:
            raise ValueError(
                f"llm.limits names agents that are not declared: {unknown} "
                f"(declared: {sorted(agents or ())})"
            )
        defaults = info.data.get("defaults")
        kept = defaults.durable.results_ttl if isinstance(defaults, Defaults) else None
        for agent, limits in llm.limits.items():
            if limits.spend is not None and kept is not None and limits.spend.window > kept:
                raise ValueError(
                    f"llm.limits.{agent}.spend.window ({limits.spend.window}s) is longer than "
                    f"defaults.durable.results_ttl ({kept:g}s), how long the shared store "
                    "keeps a window's count"
                )
        return llm

    def build_agent(self, name: str) -> Agent[Any]:
        """Instantiate the agent declared as ``name``, with its settings validated.

        Args:
            name: A key of ``agents``.

        Returns:
            The agent, named ``name``, with its ``description`` if the spec gives one.

        Raises:
            UnknownAgentError: No agent of that name is declared.
            ValueError: The agent refuses its settings.
        """
        spec = self._spec(name)
        agent = resolve_kind(spec.kind)(name=name, config=spec.config)
        if spec.description is not None:
            agent.description = spec.description
        return agent

    def max_concurrency(self, name: str) -> int:
        """How many tasks a node of ``name`` runs at once.

        Raises:
            UnknownAgentError: No agent of that name is declared.
        """
        value = self._spec(name).max_concurrency
        return self.defaults.max_concurrency if value is None else value

    def timeout(self, name: str) -> float:
        """Seconds ``name`` may work on a task that carries no deadline.

        Raises:
            UnknownAgentError: No agent of that name is declared.
        """
        value = self._spec(name).timeout
        return self.defaults.timeout if value is None else value

    def _spec(self, name: str) -> AgentSpec:
        try:
            return self.agents[name]
        except KeyError:
            raise UnknownAgentError(f"no agent {name!r} in the configuration") from None


class _EnvLayer(BaseSettings):
    """The shape ``MESH_*`` variables are read into: its types guide decoding; never validated."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__")

    bus: BusConfig = Field(default_factory=BusConfig)
    defaults: Defaults = Field(default_factory=Defaults)
    agents: dict[str, AgentSpec] = Field(default_factory=dict)
    entry: str | None = None
    llm: LLMConfig = Field(default_factory=LLMConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' env source over a given mapping; bad JSON becomes a problem."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.problems: list[ConfigProblem] = []
        super().__init__(_EnvLayer)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._environ.items()}

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError as exc:  # only a top-level MESH_<FIELD> is decoded strictly
            var = closest(env_names(self._environ), (field_name,))
            self.problems.append(ConfigProblem(f"${var}", None, field_name, f"not JSON: {exc}"))
            return None


def load_config(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    pieces: Pieces | None = None,
) -> MeshConfig:
    """Read, merge and validate the configuration.

    Args:
        path: The YAML file; ``None`` for none (defaults, environment and overrides only).
        overrides: Nested values from CLI flags (``{"bus": {"url": ...}}``); they win over
            everything. Keys left out are not overridden.
        environ: Environment variables; defaults to ``os.environ``.
        pieces: Code the settings may name (merge and routing functions, tools), by name.

    Returns:
        The validated config, with ``source`` set to ``path``.

    Raises:
        ConfigError: The file is missing or not YAML, the merged values are invalid, a
            setting names an agent that is not declared or a piece that is not registered,
            or agents name each other in a cycle; it lists every problem, each with its file
            and line or its variable.
    """
    environ = os.environ if environ is None else environ
    env_source = _EnvSource(environ)
    env_vars = env_names(environ)
    layers: list[tuple[Mapping[str, Any], _Where]] = []  # lowest precedence first
    if path is not None:
        file = str(path)
        data, lines = read_yaml(file)
        layers.append((data, lambda loc: (file, closest(lines, loc))))
    nats_values, nats_variables = nats_environment(environ)
    if nats_values:
        layers.append(
            ({"bus": nats_values}, lambda loc: (f"${closest(nats_variables, loc)}", None))
        )
    layers.append((env_source(), lambda loc: (f"${closest(env_vars, loc)}", None)))
    layers.append((overrides or {}, lambda loc: (None, None)))

    merged: dict[str, Any] = {}
    origins: dict[Loc, _Where] = {}  # every key path, by the layer whose value won
    for values, where in layers:
        merged = merge(merged, values)
        for key_path, value in paths(values):  # a merged mapping stays with who began it
            if key_path not in origins or not isinstance(value, Mapping):
                origins[key_path] = where
    problems = list(env_source.problems)
    if "source" in merged:  # a field of the model, but only this function sets it
        problems.append(_problem(("source",), _MESSAGES["extra_forbidden"], origins))
        del merged["source"]
    agents = merged.get("agents")
    declared = [str(name) for name in agents] if isinstance(agents, Mapping) else []
    context = {REFERENCES: References(agents=declared, pieces=pieces)}
    try:
        config = MeshConfig.model_validate(merged, context=context)
    except ValidationError as exc:
        problems += _validation_problems(exc, merged, origins, context)
    else:
        problems += [
            _problem(
                ("agents", cycle[0]),
                f"agents call each other in a cycle: {' -> '.join(cycle)}",
                origins,
            )
            for cycle in reference_cycles(config)
        ]
    if problems:
        raise ConfigError(problems)
    return config.model_copy(update={"source": None if path is None else str(path)})


def config_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of the configuration file (for editors and tooling).

    An agent is one of the built-in kinds, each with its own settings beside the common
    keys, or a ``package.module:Class`` kind whose settings the schema cannot know. The
    published copy is ``config/mesh.schema.json`` (``mesh schema`` prints it).

    Returns:
        The schema, a JSON document.
    """
    schema = MeshConfig.model_json_schema()
    definitions: dict[str, Any] = schema["$defs"]
    common = definitions["AgentSpec"]["properties"]
    variants = []
    for kind in BUILTIN_KINDS:
        settings = resolve_kind(kind).config_model.model_json_schema()
        for name, definition in settings.pop("$defs", {}).items():
            if definitions.setdefault(name, definition) != definition:
                raise RuntimeError(f"two settings models are named {name!r}")  # pragma: no cover
        variants.append(
            {
                "title": kind,
                "description": settings.get("description", ""),
                "type": "object",
                "properties": {
                    **settings.get("properties", {}),
                    **common,
                    "kind": {"const": kind, "description": common["kind"].get("description")},
                },
                "required": ["kind", *settings.get("required", [])],
                "additionalProperties": False,
            }
        )
    custom = {**common["kind"], "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"}
    variants.append(
        {
            "title": "package.module:Class",
            "type": "object",
            "properties": {**common, "kind": custom},
            "required": ["kind"],
            "additionalProperties": True,
        }
    )
    definitions["AgentSpec"] = {
        "description": definitions["AgentSpec"].get("description"),
        "oneOf": variants,
    }
    return schema


_MESSAGES = {"extra_forbidden": "unknown key", "missing": "required key is missing"}


def reference_cycles(config: MeshConfig) -> list[list[str]]:
    """Each cycle of agents that name each other in their settings (``a -> b -> a``).

    A cycle would call round until the call-depth limit; it is listed once, from the first
    of its agents in declaration order, ending where it began.
    """
    order = list(config.agents)
    cycles: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def visit(name: str, path: list[str]) -> None:
        for callee in config.agents[name].references if name in config.agents else ():
            if callee in path:
                cycle = path[path.index(callee) :]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    start = min(cycle, key=order.index)
                    turned = cycle[cycle.index(start) :] + cycle[: cycle.index(start)]
                    cycles.append([*turned, start])
            elif callee not in done:
                visit(callee, [*path, callee])
        done.add(name)

    done: set[str] = set()
    for name in order:
        if name not in done:
            visit(name, [name])
    return cycles


def _validation_problems(
    exc: ValidationError,
    merged: Mapping[str, Any],
    origins: Mapping[Loc, _Where],
    context: dict[str, Any],
) -> list[ConfigProblem]:
    """Every error of ``exc``, then the checks pydantic skipped because of them.

    An agent's settings are checked once its common keys are valid, and ``entry`` once all
    agents are; so that every problem shows at once, both are rerun here on the raw values.
    """
    problems = _error_problems(exc, (), origins)
    failed = {problem.field for problem in problems}
    agents = merged.get("agents")
    for name, raw in agents.items() if isinstance(agents, Mapping) else ():
        common = {f"agents.{name}.{key}" for key in AgentSpec.model_fields}
        if not isinstance(raw, Mapping) or not failed & common or f"agents.{name}.kind" in failed:
            continue
        settings = {key: value for key, value in raw.items() if key not in AgentSpec.model_fields}
        try:
            _validate_settings(str(raw["kind"]), settings, context)
        except ValidationError as settings_exc:
            problems += _error_problems(settings_exc, ("agents", str(name)), origins)
    entry = merged.get("entry")
    if isinstance(entry, str) and isinstance(agents, Mapping) and "entry" not in failed:
        try:
            _check_entry(entry, map(str, agents))
        except ValueError as entry_exc:
            problems.append(_problem(("entry",), str(entry_exc), origins))
    return problems


def _error_problems(
    exc: ValidationError, prefix: Loc, origins: Mapping[Loc, _Where]
) -> list[ConfigProblem]:
    problems = []
    errors = exc.errors()
    for error in errors:
        loc = prefix + tuple(str(part) for part in error["loc"] if part != "[key]")
        if error["type"] == "too_short" and any(
            len(other["loc"]) > len(error["loc"])
            and other["loc"][: len(error["loc"])] == error["loc"]
            for other in errors
        ):
            continue  # a list whose items failed is not also "too short"
        if error["type"] == "value_error":
            message = str(error.get("ctx", {}).get("error", error["msg"]))
        else:
            message = _MESSAGES.get(error["type"], error["msg"])
        problems.append(_problem(loc, message, origins))
    return problems


def _problem(loc: Loc, message: str, origins: Mapping[Loc, _Where]) -> ConfigProblem:
    where = closest(origins, loc)
    file, line = where(loc) if where is not None else (None, None)
    return ConfigProblem(file, line, ".".join(loc), message)
