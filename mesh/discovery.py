"""NATS service discovery (``$SRV.PING|INFO|STATS``) for hosted agents.

The response shapes and subjects are nats-py's own (`nats.micro`), so ``nats micro ls`` and
every micro client see each agent as a service. We answer them from our own subscriptions
rather than through `nats.micro.Service`, whose endpoint awaits the handler inside the
subscription callback (one task at a time) and would count only the hand-off as work.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio
from nats.micro.service import (
    EndpointInfo,
    EndpointStats,
    ServiceInfo,
    ServicePing,
    ServiceStats,
    ServiceVerb,
    control_subject,
)
from pydantic import BaseModel

from mesh.bus import Bus, Message, Subscription
from mesh.subjects import queue_group

if TYPE_CHECKING:
    from mesh.host import AgentHost

__all__ = ["AgentSummary", "ServiceResponder", "survey"]


class ServiceResponder:
    """Answers ``$SRV`` requests for one hosted agent (one service, one ``run`` endpoint).

    Args:
        bus: Where to listen.
        host: The agent host whose identity and counters are reported.
        instance: This process's unique id (the service instance id).
    """

    def __init__(self, bus: Bus, host: AgentHost, instance: str) -> None:
        self._bus = bus
        self._host = host
        self._id = instance
        self._subscriptions: list[Subscription] = []

    async def start(self) -> None:
        """Subscribe to the nine discovery subjects (all services, this name, this instance)."""
        name = self._host.agent.name
        handlers = {
            ServiceVerb.PING: self._ping,
            ServiceVerb.INFO: self._info,
            ServiceVerb.STATS: self._stats,
        }
        for verb, handler in handlers.items():
            for subject in (
                control_subject(verb),
                control_subject(verb, name=name),
                control_subject(verb, name=name, id=self._id),
            ):
                self._subscriptions.append(await self._bus.subscribe(subject, handler))

    async def stop(self) -> None:
        """Stop answering."""
        for subscription in self._subscriptions:
            await subscription.unsubscribe()
        self._subscriptions.clear()

    def info(self) -> ServiceInfo:
        """The ``$SRV.INFO`` answer."""
        agent = self._host.agent
        return ServiceInfo(
            name=agent.name,
            id=self._id,
            version=agent.version,
            description=agent.description or None,
            metadata={"kind": type(agent).__name__},
            endpoints=[
                EndpointInfo(
                    name="run",
                    subject=self._host.subject,
                    queue_group=queue_group(agent.name),
                    metadata={},
                )
            ],
        )

    def stats(self) -> ServiceStats:
        """The ``$SRV.STATS`` answer."""
        agent = self._host.agent
        stats = self._host.stats
        return ServiceStats(
            name=agent.name,
            id=self._id,
            version=agent.version,
            started=datetime.fromtimestamp(stats.started, UTC).replace(tzinfo=None),
            metadata={"kind": type(agent).__name__},
            endpoints=[
                EndpointStats(
                    name="run",
                    subject=self._host.subject,
                    queue_group=queue_group(agent.name),
                    num_requests=stats.requests,
                    num_errors=stats.errors,
                    last_error=stats.last_error,
                    processing_time=stats.processing_ns,
                    average_processing_time=stats.processing_ns // max(1, stats.requests),
                    data={"in_flight": self._host.in_flight},
                )
            ],
        )

    async def _ping(self, message: Message) -> None:
        agent = self._host.agent
        ping = ServicePing(id=self._id, name=agent.name, version=agent.version)
        await self._answer(message, ping.to_dict())

    async def _info(self, message: Message) -> None:
        await self._answer(message, self.info().to_dict())

    async def _stats(self, message: Message) -> None:
        await self._answer(message, self.stats().to_dict())

    async def _answer(self, message: Message, body: dict[str, object]) -> None:
        if message.reply:
            await self._bus.publish(message.reply, json.dumps(body).encode())


class AgentSummary(BaseModel):
    """One agent of a running mesh, over all its instances (from ``$SRV.STATS``)."""

    name: str
    version: str
    instances: int
    """Processes serving it now."""
    requests: int
    """Tasks answered, over all instances since they started."""
    errors: int
    """Of which failed."""
    average_ms: float
    """Mean time a task took."""
    in_flight: int
    """Tasks running now."""


async def survey(bus: Bus, *, wait: float = 0.5) -> list[AgentSummary]:
    """Ask every service of the mesh for its stats and sum them by agent.

    Discovery is scatter-gather: every instance answers, and nobody says how many there are,
    so the answers are collected for ``wait`` seconds.

    Returns:
        One summary per agent, by name.
    """
    inbox = bus.new_inbox()
    found: dict[str, list[ServiceStats]] = {}

    async def collect(message: Message) -> None:
        try:
            stats = ServiceStats.from_dict(json.loads(message.data))
        except (ValueError, KeyError, TypeError):
            return  # not a service's stats: someone else's answer
        found.setdefault(stats.name, []).append(stats)

    subscription = await bus.subscribe(inbox, collect)
    try:
        await bus.publish(control_subject(ServiceVerb.STATS), b"", reply=inbox)
        await anyio.sleep(wait)
    finally:
        await subscription.unsubscribe()
    summaries = []
    for name, instances in sorted(found.items()):
        endpoints = [endpoint for stats in instances for endpoint in stats.endpoints]
        requests = sum(endpoint.num_requests for endpoint in endpoints)
        processing = sum(endpoint.processing_time for endpoint in endpoints)
        summaries.append(
            AgentSummary(
                name=name,
                version=instances[0].version,
                instances=len(instances),
                requests=requests,
                errors=sum(endpoint.num_errors for endpoint in endpoints),
                average_ms=processing / max(1, requests) / 1e6,
                in_flight=sum(
                    int((endpoint.data or {}).get("in_flight", 0)) for endpoint in endpoints
                ),
            )
        )
    return summaries
