"""The mesh's subject names: one place that spells them (documented in ``subjects.md``)."""

from __future__ import annotations

import re

__all__ = [
    "TELEMETRY_LLM",
    "TELEMETRY_PATTERN",
    "TELEMETRY_TASK",
    "cancel_subject",
    "dead_letter_subject",
    "durable_subject",
    "event_subject",
    "queue_group",
    "task_subject",
    "validate_agent_name",
]

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")

TELEMETRY_LLM = "mesh.telemetry.llm"
"""One `LLMCall` per model call."""
TELEMETRY_TASK = "mesh.telemetry.task"
"""One `TaskRecord` per task a host handled."""
TELEMETRY_PATTERN = "mesh.telemetry.pattern"
"""One `PatternRun` per pattern execution."""


def validate_agent_name(name: str) -> str:
    """Return ``name`` if it can be an agent name (one subject token, NATS service name rules).

    Raises:
        ValueError: Empty, or has characters other than letters, digits, ``_`` and ``-``.
    """
    if not _NAME.match(name):
        raise ValueError(
            f"invalid agent name {name!r}: use letters, digits, '_' and '-' (it is a subject token)"
        )
    return name


def task_subject(agent: str) -> str:
    """Where tasks for ``agent`` are sent: ``mesh.agent.<agent>.run``."""
    return f"mesh.agent.{agent}.run"


def queue_group(agent: str) -> str:
    """The queue group every node of ``agent`` joins: ``mesh.agent.<agent>``."""
    return f"mesh.agent.{agent}"


def event_subject(agent: str, kind: str) -> str:
    """Where ``agent`` publishes events of ``kind``: ``mesh.events.<agent>.<kind>``."""
    return f"mesh.events.{agent}.{kind}"


def cancel_subject(task_id: str) -> str:
    """Where a cancel for a running task is sent: ``mesh.cancel.<task_id>`` (reserved)."""
    return f"mesh.cancel.{task_id}"


def durable_subject(agent: str) -> str:
    """Where durable tasks for ``agent`` are published: ``mesh.durable.<agent>.run``."""
    return f"mesh.durable.{agent}.run"


def dead_letter_subject(agent: str) -> str:
    """Where ``agent``'s tasks go after their last failed try: ``mesh.dead.<agent>``."""
    return f"mesh.dead.{agent}"
