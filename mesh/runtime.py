"""`Runtime`: registers agents, serves them on a bus, and calls agents by name.

`LocalRuntime` runs on the in-memory bus, `DistributedRuntime` on NATS; they are one class
with one code path (both serialise every task and reply), and `Runtime.from_config` picks one
from the configuration: a NATS URL or none.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import anyio.abc
from pydantic import BaseModel

from mesh._sending import REPLY_GRACE, Sender
from mesh.bus import Bus, InMemoryBus, Message, NatsAuth, NatsBus, Subscription, open_bus
from mesh.bus.jetstream import JetStream
from mesh.bus.kv import InMemoryKeyValue, KeyValueStore, NatsKeyValue
from mesh.claim_check import ClaimCheck
from mesh.codec import decode, encode
from mesh.context import Context, EventHandler
from mesh.delivery import AgentDelivery, Delivery, DurableSettings, RetryPolicy
from mesh.discovery import ServiceResponder
from mesh.durable import DurableWorker
from mesh.envelope import Budget, Event, Reply, StreamRequest, Task, validated
from mesh.errors import (
    DeadlineExceededError,
    MeshError,
    UnknownAgentError,
)
from mesh.host import AgentHost
from mesh.ledger import Ledger
from mesh.limits import RateLimit
from mesh.llm.config import LLMConfig
from mesh.llm.pricing import PriceBook
from mesh.llm.registry import ModelRegistry
from mesh.streaming import Chunk, read_stream
from mesh.subjects import (
    TELEMETRY_TASK,
    cancel_subject,
    durable_subject,
    event_subject,
    validate_agent_name,
)
from mesh.task_stats import TaskTally
from mesh.telemetry import TaskRecord
from mesh.tracing import Tracing

if TYPE_CHECKING:
    from mesh.agent import Agent
    from mesh.config import MeshConfig

__all__ = ["REPLY_GRACE", "RESULTS_BUCKET", "DistributedRuntime", "LocalRuntime", "Runtime"]

_log = logging.getLogger("mesh.runtime")

DEFAULT_TIMEOUT = 60.0
"""Seconds a call may take when neither the caller nor a deadline says otherwise."""
DEFAULT_MAX_CONCURRENCY = 16
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
DEFAULT_MAX_DEPTH = 32
_CANCELLED_EARLY_KEPT = 1024
_CORE = AgentDelivery()
"""How an agent the runtime was told nothing about is delivered to (frozen, so shared)."""
RESULTS_BUCKET = "mesh_results"
"""The JetStream KV bucket of the ledger: durable results and idempotency keys."""


class _Registration:
    __slots__ = ("agent", "max_concurrency", "rate_limit", "timeout")

    def __init__(
        self,
        agent: Agent[Any],
        max_concurrency: int,
        timeout: float,
        rate_limit: RateLimit | None,
    ) -> None:
        self.agent = agent
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.rate_limit = rate_limit


class Runtime:
    """Hosts agents on a bus and calls agents anywhere on the mesh. Use ``async with``.

    Args:
        url: NATS server URL; ``None`` runs on the in-memory bus.
        name: Who top-level calls come from (the ``sender`` of their tasks).
        timeout: Default seconds for a call, and for a task that arrives without a deadline.
        max_concurrency: Default tasks run at once per hosted agent.
        max_message_bytes: Largest task a hosted agent accepts.
        max_depth: Longest call path a hosted agent accepts (the guard against cycles).
        known_agents: Every agent name of the mesh, when known (from the config): calling
            another name fails at once with ``unknown_agent``.
        discovery: Answer ``$SRV`` service discovery for hosted agents.
        drain_timeout: Seconds `stop` waits for tasks in flight before cancelling them.
        llm: How agents reach models (providers, scripted models, prices).
        tracing: Where this runtime's spans go; ``None``: no tracing (nothing is traced and
            no trace header is sent).
        retry: How calls are tried again (default `RetryPolicy()`); an agent's own policy in
            ``deliveries`` wins.
        durable: How durable tasks are held, tried and kept, and the lease of idempotency keys.
        deliveries: How each agent is delivered to (from the config): its delivery mode,
            retry policy, whether it is idempotent. Agents not in it: core, ``retry``.
        auth: Credentials and TLS for NATS (`mesh.bus.NatsAuth`; the config's ``bus``).
        connection_name: The name NATS shows for the connection (default: ``name``).

    Raises:
        ValueError: A durable agent on the in-memory bus (durable delivery needs NATS).
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        name: str = "client",
        timeout: float = DEFAULT_TIMEOUT,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        known_agents: Collection[str] | None = None,
        discovery: bool = True,
        drain_timeout: float = 30.0,
        llm: LLMConfig | None = None,
        tracing: Tracing | None = None,
        retry: RetryPolicy | None = None,
        durable: DurableSettings | None = None,
        deliveries: Mapping[str, AgentDelivery] | None = None,
        auth: NatsAuth | None = None,
        connection_name: str | None = None,
    ) -> None:
        self.url = url
        self._auth = auth
        self._connection_name = connection_name or name
        self.name = name
        self.instance = secrets.token_hex(8)
        """Unique id of this runtime (the service instance id in discovery)."""
        self._timeout = timeout
        self._max_concurrency = max_concurrency
        self._max_message_bytes = max_message_bytes
        self._max_depth = max_depth
        self._known = frozenset(known_agents) if known_agents is not None else None
        self._discovery = discovery
        self._drain_timeout = drain_timeout
        llm = llm or LLMConfig()
        self.models = ModelRegistry(llm)
        """Models by name; register code-built ones (e.g. a `ScriptedModel`) here."""
        self.prices = PriceBook(llm.prices)
        """Prices every model call."""
        self.tracing = tracing or Tracing(None)
        """Spans of the tasks hosted, the calls sent, the patterns and the model calls."""
        self.task_listeners: list[Callable[[TaskRecord], None]] = []
        """Called with the record of every task a hosted agent answered, as it is counted in
        the totals published on ``mesh.telemetry.task`` (e.g. a node's own metrics); must not
        block."""
        self._task_tally = TaskTally(
            functools.partial(self.publish_telemetry, TELEMETRY_TASK), self.instance
        )
        self._retry = retry or RetryPolicy()
        self._durable = durable or DurableSettings()
        self._deliveries = dict(deliveries or {})
        for agent in self._deliveries:
            self._refuse_durable_in_memory(agent)
        self._sender = Sender(self, durable=self._durable)
        self._ledger: Ledger | None = None
        self.jetstream: JetStream | None = None
        """JetStream on the runtime's connection, once started on NATS (else ``None``)."""
        self.claims: ClaimCheck | None = None
        """Where messages above the server's ``max_payload`` go (`mesh.claim_check`), once
        started on NATS (else ``None``)."""
        self._workers: list[DurableWorker] = []
        self._registrations: dict[str, _Registration] = {}
        self._hosts: list[AgentHost] = []
        # On the in-memory bus, the hosts calls are handed to in process (by agent name).
        self._local: dict[str, AgentHost] = {}
        self._cancelled_early: OrderedDict[str, None] = OrderedDict()
        self._responders: list[ServiceResponder] = []
        self._bus: Bus | None = None
        self._stack: AsyncExitStack | None = None
        self._background: anyio.CancelScope | None = None

    @classmethod
    def from_config(
        cls, config: MeshConfig, *, agents: Sequence[str] | None = None, **options: Any
    ) -> Runtime:
        """The runtime the configuration describes, hosting its agents (or only ``agents``).

        Args:
            config: The mesh configuration.
            agents: Host only these (a node hosts one); default: every agent of the config.
            options: More `Runtime` options (e.g. ``drain_timeout``).

        Returns:
            A `DistributedRuntime` when ``config.bus.url`` is set, else a `LocalRuntime`.

        Raises:
            UnknownAgentError: A name in ``agents`` is not in the configuration.
            ConfigError: An agent is durable but the bus is in memory.
        """
        from mesh.config import ConfigError, ConfigProblem

        names = list(config.agents) if agents is None else list(agents)
        for name in names:
            if name not in config.agents:
                known = ", ".join(sorted(config.agents)) or "none"
                raise UnknownAgentError(f"no agent {name!r} in the configuration (known: {known})")
        options = {
            "connection_name": config.bus.name,
            **options,
            "timeout": config.defaults.timeout,
            "max_concurrency": config.defaults.max_concurrency,
            "max_message_bytes": config.defaults.max_message_bytes,
            "max_depth": config.defaults.max_depth,
            # A config that declares no agents says nothing about which exist.
            "known_agents": list(config.agents) or None,
            "llm": config.llm,
            "tracing": Tracing.from_config(config.tracing),
            "auth": config.bus,
            "retry": config.defaults.retry,
            "durable": config.defaults.durable,
            "deliveries": {
                name: AgentDelivery(
                    delivery=spec.delivery or config.defaults.delivery,
                    retry=spec.retry,
                    idempotent=spec.idempotent,
                    max_deliver=spec.max_deliver,
                    ack_wait=spec.ack_wait,
                )
                for name, spec in config.agents.items()
            },
        }
        if not config.bus.url:
            durable = [
                name
                for name, delivery in options["deliveries"].items()
                if delivery.delivery is Delivery.DURABLE
            ]
            if durable:
                raise ConfigError(
                    [
                        ConfigProblem(
                            config.source,
                            None,
                            f"agents.{name}.delivery",
                            "durable delivery needs NATS with JetStream (bus.url or NATS_URL); "
                            "the in-memory bus keeps nothing beyond this process",
                        )
                        for name in durable
                    ]
                )
        runtime: Runtime
        if config.bus.url:
            runtime = DistributedRuntime(config.bus.url, **options)
        else:
            runtime = LocalRuntime(**options)
        for name in names:
            runtime.register(
                config.build_agent(name),
                max_concurrency=config.max_concurrency(name),
                timeout=config.timeout(name),
                rate_limit=config.agents[name].rate_limit,
            )
        return runtime

    # -- hosting -------------------------------------------------------------------------------

    def register(
        self,
        agent: Agent[Any],
        *,
        max_concurrency: int | None = None,
        timeout: float | None = None,
        delivery: AgentDelivery | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        """Host ``agent`` once the runtime starts.

        Args:
            agent: The agent.
            max_concurrency: Tasks run at once (default: the runtime's).
            timeout: Seconds a task without a deadline may run (default: the runtime's).
            delivery: How tasks reach it (default: as in ``deliveries``, else core).
            rate_limit: Tasks it takes per second, per process (a token bucket); above it
                ``rate_limited`` (default: no limit).

        Raises:
            ValueError: An agent of that name is registered already, or it is durable on the
                in-memory bus.
            RuntimeError: The runtime has started.
        """
        if self._stack is not None:
            raise RuntimeError("register agents before the runtime starts")
        if agent.name in self._registrations:
            raise ValueError(f"an agent named {agent.name!r} is registered already")
        if delivery is not None:
            self._deliveries[agent.name] = delivery
            self._refuse_durable_in_memory(agent.name)
        self._registrations[agent.name] = _Registration(
            agent,
            max_concurrency or self._max_concurrency,
            timeout or self._timeout,
            rate_limit,
        )

    @property
    def agents(self) -> list[str]:
        """Names of the agents this runtime hosts."""
        return list(self._registrations)

    @property
    def bus(self) -> Bus:
        """The bus, once started.

        Raises:
            RuntimeError: The runtime has not started.
        """
        if self._bus is None:
            raise RuntimeError("the runtime has not started: use `async with runtime:`")
        return self._bus

    @property
    def ledger(self) -> Ledger:
        """Results and idempotency keys (a JetStream KV bucket on NATS), once started.

        Raises:
            RuntimeError: The runtime has not started.
        """
        if self._ledger is None:
            raise RuntimeError("the runtime has not started: use `async with runtime:`")
        return self._ledger

    def delivery(self, agent: str) -> AgentDelivery:
        """How tasks reach ``agent`` (core with the runtime's policy unless configured)."""
        return self._deliveries.get(agent) or _CORE

    def retry_policy(self, agent: str) -> RetryPolicy:
        """The policy calls to ``agent`` are tried under."""
        return self.delivery(agent).retry or self._retry

    def _refuse_durable_in_memory(self, agent: str) -> None:
        if self.url is None and self.delivery(agent).delivery is Delivery.DURABLE:
            raise ValueError(
                f"agent {agent!r} is durable: durable delivery needs NATS with JetStream, "
                "and this runtime is on the in-memory bus"
            )

    @property
    def hosts(self) -> list[AgentHost]:
        """The hosts serving this runtime's agents (empty before start)."""
        return list(self._hosts)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect the bus and serve every registered agent.

        Raises:
            ConnectionError: NATS cannot be reached.
        """
        if self._stack is not None:
            return
        stack = AsyncExitStack()
        try:
            opened = open_bus(self.url, name=self._connection_name, auth=self._auth)
            self._bus = await stack.enter_async_context(opened)
            store: KeyValueStore
            if isinstance(self._bus, NatsBus):
                self.jetstream = JetStream(self._bus.client)
                self.claims = ClaimCheck(self._bus.client)
                store = NatsKeyValue(
                    self._bus.client,
                    RESULTS_BUCKET,
                    ttl=self._durable.results_ttl,
                    replicas=self._durable.replicas,
                )
            else:
                store = InMemoryKeyValue(ttl=self._durable.results_ttl)
            self._ledger = Ledger(store, instance=self.instance, lease=self._durable.ack_wait)
            group = await stack.enter_async_context(anyio.create_task_group())
            self._stack = stack
            for registration in self._registrations.values():
                await self._serve(registration, group)
            if self._hosts:
                await self._bus.subscribe(cancel_subject("*"), self._on_cancel)
            registered = self._registrations.values()
            background = [r.agent for r in registered if r.agent.runs_in_background]
            if background:
                group.start_soon(self._run_background, background)
            # Return only once the server has every subscription: a caller told "ready" must
            # not get "no responders".
            await self._bus.flush()
        except BaseException:
            self._stack = None
            await stack.aclose()
            raise

    async def stop(self) -> None:
        """Stop taking tasks, answer every task already taken, then close the bus."""
        if self._stack is None:
            return
        stack, self._stack = self._stack, None
        self._local.clear()  # calls from now on go by the bus, whose hosts are draining
        try:
            for responder in self._responders:
                await responder.stop()
            for worker in self._workers:
                worker.stop()
            try:
                with anyio.move_on_after(self._drain_timeout) as drain:
                    async with anyio.create_task_group() as group:
                        for host in self._hosts:
                            group.start_soon(host.stop)
                if drain.cancelled_caught:
                    _log.warning(
                        "tasks still running after %gs were cancelled", self._drain_timeout
                    )
            finally:
                for host in self._hosts:
                    await host.close()
            if self._background is not None:
                self._background.cancel()
            await self._task_tally.flush()
            await self.bus.drain()
            await anyio.to_thread.run_sync(self.tracing.flush)
        finally:
            await stack.aclose()
            self._hosts.clear()
            self._responders.clear()
            self._workers.clear()
            self._bus = None
            self._ledger = None
            self.jetstream = None
            self.claims = None

    async def _serve(self, registration: _Registration, group: anyio.abc.TaskGroup) -> None:
        if not registration.agent.handles_tasks:
            return
        host = AgentHost(
            registration.agent,
            self,
            max_concurrency=registration.max_concurrency,
            timeout=registration.timeout,
            max_message_bytes=self._max_message_bytes,
            max_depth=self._max_depth,
            rate_limit=registration.rate_limit,
        )
        await host.start()
        self._hosts.append(host)
        if not isinstance(self._bus, NatsBus):
            self._local[host.agent.name] = host
        delivery = self.delivery(host.agent.name)
        if delivery.delivery is Delivery.DURABLE and self.jetstream is not None:
            settings = self._durable.model_copy(
                update={
                    "max_deliver": delivery.max_deliver or self._durable.max_deliver,
                    "ack_wait": delivery.ack_wait or self._durable.ack_wait,
                }
            )
            worker = DurableWorker(
                host,
                self.jetstream,
                self.ledger,
                settings=settings,
                retry=self.retry_policy(host.agent.name),
            )
            self._workers.append(worker)
            group.start_soon(worker.run)
        if self._discovery:
            responder = ServiceResponder(self.bus, host, self.instance)
            await responder.start()
            self._responders.append(responder)

    async def _run_background(self, agents: list[Agent[Any]]) -> None:
        with anyio.CancelScope() as scope:
            self._background = scope
            async with anyio.create_task_group() as group:
                for agent in agents:
                    group.start_soon(self._run_one_background, agent)

    async def _run_one_background(self, agent: Agent[Any]) -> None:
        try:
            await agent.start(Context(self, agent=agent.name))
        except Exception:  # noqa: BLE001 - one failed agent must not stop the others
            _log.exception("agent %r stopped with an error", agent.name)

    # -- calling -------------------------------------------------------------------------------

    async def request(
        self,
        agent: str,
        input: Any,
        *,
        timeout: float | None = None,
        context: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        retry: RetryPolicy | None = None,
        budget: Budget | None = None,
    ) -> Reply:
        """Send a task to ``agent`` and return its reply, failed or not (errors never raise).

        Args:
            agent: The callee's name.
            input: What it works on.
            timeout: Seconds to allow (default: the runtime's ``timeout``).
            context: Metadata for the callee (``task.context``).
            idempotency_key: The same for every try of this logical task (your own retries
                included): a host that finished it answers again from the stored reply.
            retry: How to try again (default: the agent's policy, else the runtime's).
            budget: What the model calls of the task, and of every task below it, may spend
                in all (``budget_exceeded`` past it); default: no limit.
        """
        task = self._task(input, context, idempotency_key=idempotency_key, budget=budget)
        return await self.send(agent, task, timeout=timeout, retry=retry)

    async def call(
        self,
        agent: str,
        input: Any,
        *,
        timeout: float | None = None,
        context: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        retry: RetryPolicy | None = None,
        budget: Budget | None = None,
    ) -> Any:
        """Send a task to ``agent`` and return its output (arguments as for `request`).

        Raises:
            MeshError: The callee's error as its own class (see `Context.call`).
        """
        reply = await self.request(
            agent,
            input,
            timeout=timeout,
            context=context,
            idempotency_key=idempotency_key,
            retry=retry,
            budget=budget,
        )
        return reply.unwrap()

    async def call_many(
        self,
        agents: Sequence[str],
        input: Any = None,
        *,
        inputs: Sequence[Any] | None = None,
        timeout: float | None = None,
    ) -> list[Reply]:
        """Call several agents concurrently; replies in order (see `Context.call_many`)."""
        return await self._client().call_many(agents, input, inputs=inputs, timeout=timeout)

    async def send(
        self,
        agent: str,
        task: Task,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> Reply:
        """Deliver a task built by a `Context` and return the reply; failures come as replies.

        The task's deadline is set here: ``timeout`` (or the default) from now, never past
        ``deadline``. A core agent's task is tried again under ``retry`` (default: the agent's
        policy); a durable agent's goes through its JetStream stream.
        """
        allowed = self._stamp_deadline(task, timeout, deadline)
        try:
            self._check_callee(agent)
            if allowed <= 0:
                raise DeadlineExceededError(f"no time left to call {agent!r}")
            delivery = self.delivery(agent)
            if delivery.delivery is Delivery.DURABLE:
                return await self._sender.durable(agent, task)
            idempotent = delivery.idempotent or task.idempotency_key is not None
            policy = retry or self.retry_policy(agent)
            return await self._sender.core(agent, task, policy, idempotent=idempotent)
        except MeshError as exc:
            return Reply.failure(task.id, exc, correlation_id=task.correlation_id)

    def _task(self, input: Any, context: dict[str, Any] | None, **fields: Any) -> Task:
        """A top-level task from this runtime (its sender and the start of its path)."""
        return validated(
            Task,
            {
                "input": input,
                "sender": self.name,
                "context": dict(context or {}),
                "path": [self.name],
                **fields,
            },
        )

    def _stamp_deadline(self, task: Task, timeout: float | None, deadline: float | None) -> float:
        """Set ``task.deadline``: ``timeout`` (or the default) from now, never past
        ``deadline``; returns the seconds allowed."""
        now = time.time()
        allowed = timeout if timeout is not None else self._timeout
        if deadline is not None:
            allowed = min(allowed, deadline - now)
        task.deadline = now + allowed
        return allowed

    async def stream(
        self,
        agent: str,
        input: Any,
        *,
        timeout: float | None = None,
        context: dict[str, Any] | None = None,
        window: int = 64,
        forward: str = "all",
    ) -> AsyncIterator[Chunk | Reply]:
        """Call ``agent`` and yield its reply as it is made: `mesh.streaming.Chunk` s (text
        as it is written, events, and the chunks of every agent below it, each tagged with
        its call path), then the final `Reply`, failed or not (errors never raise).

        Stopping early (``break``, cancellation) cancels the task and everything below it.

        Args:
            agent: The callee's name.
            input: What it works on.
            timeout: Seconds to allow (default: the runtime's ``timeout``).
            context: Metadata for the callee (``task.context``).
            window: Chunks the callee may send ahead of what has been read: the most this
                caller ever holds.
            forward: ``all``, ``text`` (the callee's own text only) or ``none`` (only the
                final reply).
        """
        task = self._task(input, context, stream=StreamRequest(window=window, forward=forward))
        async for item in self.open_stream(agent, task, timeout=timeout):
            yield item

    async def open_stream(
        self,
        agent: str,
        task: Task,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[Chunk | Reply]:
        """Deliver a task that asks for a stream (``task.stream``, built by `stream` or a
        `Context`) and yield its chunks, then its reply. Not tried again: its chunks are out.

        A durable agent's reply is not streamed: it comes alone.
        """
        allowed = self._stamp_deadline(task, timeout, deadline)
        assert task.deadline is not None
        try:
            self._check_callee(agent)
            if allowed <= 0:
                raise DeadlineExceededError(f"no time left to call {agent!r}")
        except MeshError as exc:
            yield Reply.failure(task.id, exc, correlation_id=task.correlation_id)
            return
        if self.delivery(agent).delivery is Delivery.DURABLE:
            yield await self.send(agent, task, deadline=task.deadline)
            return
        async for item in read_stream(self, agent, task, deadline=task.deadline + REPLY_GRACE):
            yield item

    async def submit(
        self,
        agent: str,
        input: Any,
        *,
        timeout: float | None = None,
        context: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        budget: Budget | None = None,
    ) -> str:
        """Hand a task to a durable agent and return its id at once; fetch the reply later
        with `result` (from this process or any other); ``budget`` as for `request`.

        Raises:
            ValueError: ``agent`` is not durable.
            MeshError: The stream did not take the task before its deadline.
        """
        self._check_callee(agent)
        if self.delivery(agent).delivery is not Delivery.DURABLE:
            raise ValueError(f"agent {agent!r} is not durable: use call or request")
        task = self._task(
            input,
            context,
            idempotency_key=idempotency_key,
            budget=budget,
            deadline=time.time() + (self._timeout if timeout is None else timeout),
        )
        with self.tracing.sending(durable_subject(agent), task) as headers:
            await self._sender.publish(agent, task, headers=dict(headers or {}))
        return task.id

    async def result(self, task_id: str, *, wait: float = 0.0) -> Reply | None:
        """The reply of the durable task ``task_id`` (kept ``results_ttl``), from any runtime.

        Args:
            task_id: The task's id (`submit` returns it; a reply carries it).
            wait: Seconds to wait for it if it has no reply yet.

        Returns:
            The reply, or ``None`` if there is none (yet, or any more).

        Raises:
            MeshError: The result store (JetStream) cannot be reached.
        """
        return await self._sender.stored(task_id, wait=wait)

    async def cancel_remote(self, task_id: str) -> None:
        """Publish a cancel for ``task_id`` (``mesh.cancel.<task_id>``); never raises."""
        with anyio.CancelScope(shield=True):
            try:
                await self.bus.publish(cancel_subject(task_id), b"")
            except (MeshError, ConnectionError, RuntimeError) as exc:
                _log.debug("cancel of %s not sent: %s", task_id, exc)

    async def _on_cancel(self, message: Message) -> None:
        task_id = message.subject.rpartition(".")[2]
        if any(host.cancel(task_id) for host in self._hosts):
            _log.info("task %s cancelled by its caller", task_id)
            return
        # The cancel may overtake its task (they travel on different subjects): remember it,
        # so that the task is refused if it arrives after all.
        self._cancelled_early[task_id] = None
        if len(self._cancelled_early) > _CANCELLED_EARLY_KEPT:
            self._cancelled_early.popitem(last=False)

    def cancelled_early(self, task_id: str) -> bool:
        """Whether a cancel for ``task_id`` arrived before the task (it is then forgotten)."""
        return self._cancelled_early.pop(task_id, False) is None

    def local_host(self, agent: str) -> AgentHost | None:
        """The host of ``agent`` in this runtime if calls are handed to it in process (on the
        in-memory bus, while the runtime runs), else ``None``: calls go by message."""
        return self._local.get(agent)

    def _check_callee(self, agent: str) -> None:
        if agent in self._registrations:
            return  # its name was checked when it was registered
        try:
            validate_agent_name(agent)
        except ValueError as exc:
            raise UnknownAgentError(str(exc)) from exc
        known = self._known
        if known is None and self.url is None:
            known = frozenset()  # in memory, the registered agents are the whole mesh
        if known is not None and agent not in known:
            known = known | self._registrations.keys()
            listed = ", ".join(sorted(known)) or "none"
            raise UnknownAgentError(f"no agent named {agent!r} on this mesh (known: {listed})")

    def _client(self) -> Context:
        return Context(self, agent=self.name)

    # -- events and telemetry ------------------------------------------------------------------

    def record_task(
        self, agent: str, reply: Reply, took: int, waited: int, delivery: int | None = None
    ) -> None:
        """Count a task a hosted agent answered: in the totals published on
        ``mesh.telemetry.task`` (`TaskTally`), and to the `task_listeners` as a `TaskRecord`.

        Args:
            agent: The agent that answered it.
            reply: Its reply.
            took: Nanoseconds from decoding it to its reply being ready.
            waited: Nanoseconds it waited for a slot.
            delivery: Which JetStream delivery of a durable task it was.
        """
        error = reply.error
        outcome = "ok" if error is None else error.code
        replayed = bool(reply.meta.get("replayed"))
        fields: dict[str, Any] | None = None
        if error is not None or self.task_listeners:  # a failure goes out whole
            fields = {
                "agent": agent,
                "instance": self.instance,
                "task_id": reply.id,
                "correlation_id": reply.correlation_id,
                "outcome": outcome,
                "duration_ms": took / 1e6,
                "queue_ms": waited / 1e6,
                "replayed": replayed,
                "delivery": delivery,
                "time": time.time(),
            }
            if self.task_listeners:
                record = TaskRecord(**fields)
                for listener in self.task_listeners:
                    listener(record)
        bus = self._bus
        if not isinstance(bus, InMemoryBus) or bus.has_interest(TELEMETRY_TASK):
            # In memory, totals no subscriber in this process would get are not even kept.
            failure = None if error is None else fields
            self._task_tally.add(
                agent, outcome, took / 1e9, waited / 1e9, replayed=replayed, failure=failure
            )

    async def publish_telemetry(self, subject: str, record: BaseModel | bytes) -> None:
        """Publish a telemetry record, or one written already (fire-and-forget: a failure is
        logged, never raised)."""
        try:
            data = record if isinstance(record, bytes) else encode(record)
            await self.bus.publish(subject, data)
        except (MeshError, ConnectionError, RuntimeError, TypeError) as exc:
            _log.debug("telemetry on %s dropped: %s", subject, exc)

    async def emit(self, event: Event) -> None:
        """Publish ``event`` on ``mesh.events.<source>.<kind>``."""
        await self.bus.publish(event_subject(event.source, event.kind), encode(event))

    async def subscribe(self, subject: str, handler: EventHandler) -> Subscription:
        """Receive events on ``subject`` (wildcards allowed); malformed ones are logged, skipped."""

        async def deliver(message: Message) -> None:
            try:
                event = decode(message.data, Event, message.headers)
            except MeshError as exc:
                _log.warning("skipped a malformed event on %r: %s", message.subject, exc)
                return
            await handler(event)

        return await self.bus.subscribe(subject, deliver)


class LocalRuntime(Runtime):
    """A runtime on the in-memory bus: the whole mesh in this process, no server needed."""

    def __init__(self, **options: Any) -> None:
        super().__init__(url=None, **options)


class DistributedRuntime(Runtime):
    """A runtime on NATS at ``url``: its agents serve, and its calls reach, the whole mesh."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url=url, **options)
