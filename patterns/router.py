"""`router`: label the input, then hand the task to the agent mapped to that label.

The label comes from the first of these that gives one: the rule table (regular expressions,
first match wins), a Python function (``labeller``: a piece registered in code, see
`mesh.refs.Pieces`, or ``package.module:function``), the classifier agent. Labels are
normalised (lower case, runs of whitespace as one space, trimmed) before they are looked up
in ``routes``; a label with no route goes to the ``default`` agent, and with no default the
task fails with ``no_route``.

What routing saved. Each execution reports ``classifier_cost_usd`` (what labelling cost:
the classifier's reply, 0 when a rule or the function labelled), ``route_cost_usd`` (what
the chosen agent's work cost) and ``saved_usd``: what sending the task straight to the
costliest route, without labelling, would have cost, minus what was paid::

    saved_usd = baseline_cost_usd - classifier_cost_usd - route_cost_usd

The baseline is the route whose agent has the highest cost per token so far (all the work it
did for this router, cost over tokens), priced for this task at that rate times the chosen
route's tokens: the same prompt, and an answer as long. When the chosen route is the
costliest, the baseline is exactly what it cost, and the saving is minus the classifier's
cost. A rate per token is measured rather than a price table configured because a router
does not know which models its routes use, nor how many calls they make (a route may be a
pipeline). The rates belong to the router instance (one node process): a replica learns from
the tasks it routed, and until it has seen a costlier route, it compares with the costliest
it knows. A cost that is unknown (an unpriced model) makes what depends on it ``None``.

In YAML::

    support:
      kind: router
      classifier: triage                  # and/or rules: [{match: "(?i)invoice", label: billing}]
      routes: {billing: billing-desk, technical: engineer}
      default: general
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents.classifier import normalise_category
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import ZERO_USAGE, Task, Usage
from mesh.errors import BadSchemaError, InvalidOutputError, NoRouteError
from mesh.refs import AgentRef, Piece
from patterns._callee import output_of
from patterns._metrics import measured

__all__ = ["Labeller", "RouteRule", "RouterConfig", "RouterPattern"]

Labeller = Callable[[Any], str | Awaitable[str | None] | None]
"""A function (plain or async) given the task's input, returning its label, or ``None`` to
leave the input to the classifier (or to the default route)."""


class RouteRule(BaseModel):
    """One row of a router's rule table."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    match: str
    """A regular expression, searched (not anchored) in the input's text; write ``(?i)``
    first to ignore case."""
    label: str
    """The label an input that matches gets (normalised)."""

    @field_validator("match")
    @classmethod
    def _compiles(cls, match: str) -> str:
        try:
            re.compile(match)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return match

    @field_validator("label")
    @classmethod
    def _normalise_label(cls, label: str) -> str:
        return _label(label)


class RouterConfig(BaseModel):
    """Settings of a `router` pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    routes: dict[str, AgentRef] = Field(min_length=1)
    """The agent each label goes to; labels are normalised (``" Billing  Issue"`` is
    ``"billing issue"``), so each must differ from the others after that."""
    default: AgentRef | None = None
    """The agent for a label with no route (or no label at all); ``None`` fails such a task
    with ``no_route``."""
    classifier: AgentRef | None = None
    """The agent that labels what the rules and the function leave unlabelled: the built-in
    ``classifier``, or any agent answering a label as text or ``{"category": label}``."""
    rules: tuple[RouteRule, ...] = ()
    """Tried first, in order: the first whose ``match`` is found in the input labels it."""
    labeller: Piece | None = None
    """A function labelling the input (see `Labeller`), tried after the rules and before the
    classifier: a piece registered in code (`mesh.refs.Pieces`), ``package.module:function``,
    or in code the function itself."""

    @field_validator("routes")
    @classmethod
    def _normalise_routes(cls, routes: dict[str, str]) -> dict[str, str]:
        labels = [_label(label) for label in routes]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"labels repeat after normalising case and spaces: {repeated}")
        return dict(zip(labels, routes.values(), strict=True))

    @field_validator("labeller")
    @classmethod
    def _labeller_is_a_function(cls, labeller: Piece | None) -> Piece | None:
        if labeller is not None and not callable(labeller.target):
            raise ValueError(f"labeller {labeller.ref!r} is not a function")
        return labeller

    @model_validator(mode="after")
    def _rules_have_routes(self) -> RouterConfig:
        if self.labeller is None and self.classifier is None and not self.rules:
            raise ValueError("nothing labels the input: set `classifier`, `rules` or `labeller`")
        if self.default is None:
            for index, rule in enumerate(self.rules):
                if rule.label not in self.routes:
                    raise ValueError(
                        f"rules[{index}] gives the label {rule.label!r}, which has no route "
                        f"(routes: {sorted(self.routes)}) and there is no default"
                    )
        return self


class RouterPattern(Agent[RouterConfig]):
    """Label the input and pass the task to the agent of that label's route (see the module
    docstring).

    Args:
        name: The name it is called by.
        config: Its settings.

    Input: anything the route agents take; the classifier and the function get it as it is.
    The rules need text: the input itself, or its ``"text"``.

    Output: ``{"route", "label", "agent", "output"}``: the route taken (the label, or
    ``"default"``), the normalised label (``None`` if nothing gave one), the agent it went
    to, and that agent's output.

    Figures (``meta["pattern"]["figures"]``): ``label``, ``labelled_by`` (``rules``,
    ``function``, ``classifier`` or ``None``), ``route``, ``agent``, ``route_latency_ms``,
    ``classifier_cost_usd``, ``route_cost_usd``, ``baseline_agent``, ``baseline_cost_usd``
    and ``saved_usd`` (see the module docstring); a task that found no route has the first
    two and ``classifier_cost_usd``.

    Raises:
        BadSchemaError: The router has rules and the input is not text nor ``{"text": ...}``.
        NoRouteError: The label has no route and there is no default; ``details`` has
            ``label``, ``labelled_by`` and ``routes``.
        InvalidOutputError: The classifier answered something that is not a label, or the
            function returned something that is not text nor ``None``.
        MeshError: The classifier or the route's agent failed: its class and code, the
            message naming it; ``details`` has the callee's ``error``.
    """

    name = "router"
    description = "Labels the input and passes the task to the agent of that label's route."
    config_model = RouterConfig

    def __init__(
        self,
        *,
        name: str | None = None,
        config: RouterConfig | None = None,
    ) -> None:
        super().__init__(name=name, config=config)
        self._labeller = None if self.config.labeller is None else self.config.labeller.target
        self._rules = [(re.compile(rule.match), rule.label) for rule in self.config.rules]
        self._spent: dict[str, tuple[float, int]] = {}  # cost and tokens, by route agent

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        async with measured(ctx, "router") as figures:
            label, labelled_by, labelling = await self._label(task.input, ctx)
            figures.update(
                label=label, labelled_by=labelled_by, classifier_cost_usd=labelling.cost_usd
            )
            route, agent = self._route(label, labelled_by)
            figures.update(route=route, agent=agent)
            started = time.perf_counter()
            reply = await ctx.request(agent, task.input)
            figures["route_latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
            figures.update(self._costs(agent, reply.usage, labelling.cost_usd))
            output = output_of(
                reply, f"router: route {route!r} ({agent}) failed", route=route, agent=agent
            )
            return {"route": route, "label": label, "agent": agent, "output": output}

    async def _label(self, input: Any, ctx: Context) -> tuple[str | None, str | None, Usage]:
        """The label, what gave it, and what labelling cost."""
        if self._rules:
            text = _text(input)
            for pattern, label in self._rules:
                if pattern.search(text):
                    return label, "rules", ZERO_USAGE
        if self._labeller is not None:
            answer = self._labeller(input)
            if inspect.isawaitable(answer):
                answer = await answer
            if isinstance(answer, str):
                return _label(answer), "function", ZERO_USAGE
            if answer is not None:
                kind = type(answer).__name__
                raise InvalidOutputError(f"router: the labeller returned {kind}, not a label")
        classifier = self.config.classifier
        if classifier is None:
            return None, None, ZERO_USAGE
        reply = await ctx.request(classifier, input)
        output = output_of(reply, f"router: the classifier {classifier!r} failed")
        category = output.get("category") if isinstance(output, Mapping) else output
        if not isinstance(category, str):
            raise InvalidOutputError(
                f"router: the classifier {classifier!r} answered {type(output).__name__}, "
                'not a label (text, or an object with a text "category")'
            )
        return _label(category), "classifier", reply.usage

    def _route(self, label: str | None, labelled_by: str | None) -> tuple[str, str]:
        routes = self.config.routes
        if label is not None and label in routes:
            return label, routes[label]
        if self.config.default is not None:
            return "default", self.config.default
        details = {"label": label, "labelled_by": labelled_by, "routes": sorted(routes)}
        if label is None:
            raise NoRouteError(
                "router: no rule matched the input and nothing else labels it, and there is "
                "no default route",
                details=details,
            )
        raise NoRouteError(
            f"router: no route for the label {label!r} (routes: {', '.join(sorted(routes))}) "
            "and no default route",
            details=details,
        )

    def _costs(self, agent: str, usage: Usage, labelling: float | None) -> dict[str, Any]:
        """The cost figures of one execution (see the module docstring)."""
        route_cost = usage.cost_usd
        if route_cost is not None and usage.total_tokens:
            spent, tokens = self._spent.get(agent, (0.0, 0))
            self._spent[agent] = (spent + route_cost, tokens + usage.total_tokens)
        rates = {name: spent / tokens for name, (spent, tokens) in self._spent.items()}
        baseline = max(rates, key=lambda name: (rates[name], name == agent), default=None)
        baseline_cost: float | None = None
        if baseline == agent:
            baseline_cost = route_cost
        elif baseline is not None and route_cost is not None:
            baseline_cost = rates[baseline] * usage.total_tokens
        saved = None
        if baseline_cost is not None and labelling is not None and route_cost is not None:
            saved = baseline_cost - labelling - route_cost
        return {
            "route_cost_usd": route_cost,
            "baseline_agent": baseline,
            "baseline_cost_usd": baseline_cost,
            "saved_usd": saved,
        }


def _label(name: str) -> str:
    return normalise_category(name)


def _text(input: Any) -> str:
    if isinstance(input, str):
        return input
    if isinstance(input, Mapping) and isinstance(input.get("text"), str):
        return str(input["text"])
    raise BadSchemaError(
        'router input: the rules match text: give text or {"text": ...}, '
        f"not {type(input).__name__}"
    )
