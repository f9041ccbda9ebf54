"""Orchestration patterns: coordinators that are agents themselves, so they nest.

Each is usable from YAML by its kind name (``parallel``, ``sequential``, ``router``, ``swarm``,
``supervisor``, ``rag``, ``reflection``, ``ensemble``, ``debate``, ``map_reduce``,
``plan_execute``, ``hierarchical``) and reports its metrics on ``mesh.telemetry.pattern``
and in its reply's ``meta["pattern"]``. A pattern of your own does the same with `measured`.
"""

from patterns._metrics import measured
from patterns.debate import DebateConfig, DebatePattern
from patterns.ensemble import EnsembleConfig, EnsemblePattern
from patterns.hierarchical import HierarchicalConfig, HierarchicalPattern, TeamSpec
from patterns.map_reduce import MapReduceConfig, MapReducePattern
from patterns.parallel import AggregateFunction, BranchSpec, ParallelConfig, ParallelPattern
from patterns.plan_execute import PlanExecuteConfig, PlanExecutePattern
from patterns.rag import RagConfig, RagPattern, reciprocal_rank_fusion
from patterns.reflection import ReflectionConfig, ReflectionPattern
from patterns.router import Labeller, RouterConfig, RouterPattern, RouteRule
from patterns.sequential import OnError, SequentialConfig, SequentialPattern, SequentialStep
from patterns.supervisor import SupervisorConfig, SupervisorPattern, finish
from patterns.swarm import SwarmConfig, SwarmPattern, SwarmState, handoff

__all__ = [
    "AggregateFunction",
    "BranchSpec",
    "DebateConfig",
    "DebatePattern",
    "EnsembleConfig",
    "EnsemblePattern",
    "HierarchicalConfig",
    "HierarchicalPattern",
    "Labeller",
    "MapReduceConfig",
    "MapReducePattern",
    "OnError",
    "ParallelConfig",
    "ParallelPattern",
    "PlanExecuteConfig",
    "PlanExecutePattern",
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
    "TeamSpec",
    "finish",
    "handoff",
    "measured",
    "reciprocal_rank_fusion",
]
