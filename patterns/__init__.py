"""Orchestration patterns: coordinators that are agents themselves, so they nest.

Each is usable from YAML by its kind name (``parallel``, ``sequential``, ``router``, ``swarm``,
``supervisor``, ``rag``, ``reflection``) and reports its metrics on ``mesh.telemetry.pattern``
and in its reply's ``meta["pattern"]``.
"""

from patterns.parallel import AggregateFunction, BranchSpec, ParallelConfig, ParallelPattern
from patterns.rag import RagConfig, RagPattern, reciprocal_rank_fusion
from patterns.reflection import ReflectionConfig, ReflectionPattern
from patterns.router import Labeller, RouterConfig, RouterPattern, RouteRule
from patterns.sequential import OnError, SequentialConfig, SequentialPattern, SequentialStep
from patterns.supervisor import SupervisorConfig, SupervisorPattern, finish
from patterns.swarm import SwarmConfig, SwarmPattern, SwarmState, handoff

__all__ = [
    "AggregateFunction",
    "BranchSpec",
    "Labeller",
    "OnError",
    "ParallelConfig",
    "ParallelPattern",
    "RagConfig",
    "RagPattern",
    "ReflectionConfig",
    "ReflectionPattern",
    "RouteRule",
    "RouterConfig",
    "RouterPattern",
    "SequentialConfig",
    "SequentialPattern",
    "SequentialStep",
    "SupervisorConfig",
    "SupervisorPattern",
    "SwarmConfig",
    "SwarmPattern",
    "SwarmState",
    "finish",
    "handoff",
    "reciprocal_rank_fusion",
]
