"""agent-mesh: LLM agents as an event-driven mesh on NATS.

The public surface; everything else is reached through its module (``mesh.bus``,
``mesh.errors``, ``mesh.codec``, ``mesh.config``).
"""

from mesh.agent import Agent, NoConfig
from mesh.config import ConfigError, MeshConfig, load_config
from mesh.context import Context
from mesh.envelope import ErrorInfo, Event, Reply, Task, Usage
from mesh.errors import ErrorCode, MeshError
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime

__all__ = [
    "Agent",
    "ConfigError",
    "Context",
    "DistributedRuntime",
    "ErrorCode",
    "ErrorInfo",
    "Event",
    "LocalRuntime",
    "MeshConfig",
    "MeshError",
    "NoConfig",
    "Reply",
    "Runtime",
    "Task",
    "Usage",
    "load_config",
]
