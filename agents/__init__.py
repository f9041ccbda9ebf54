"""Built-in agents, each usable from YAML by its kind name (see `mesh.config.BUILTIN_KINDS`)."""

from agents.echo import EchoAgent
from agents.upper import UpperAgent, UpperConfig

__all__ = ["EchoAgent", "UpperAgent", "UpperConfig"]
