"""`Agent`: the one base for request/response agents (`execute`) and reactive ones (`start`).

An agent acts only through the `Context` it is given, so the same code runs on the in-memory
bus and on NATS, its calls are bounded by its task's deadline, and their usage is summed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from mesh.subjects import validate_agent_name

if TYPE_CHECKING:
    from mesh.context import Context
    from mesh.envelope import Task

__all__ = ["Agent", "NoConfig"]


class NoConfig(BaseModel):
    """Settings of an agent that takes none; any key given is a mistake and refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ConfigT = TypeVar("ConfigT", bound=BaseModel)


class Agent(Generic[ConfigT]):
    """Base class of every agent and pattern.

    Override `execute` to answer tasks, `start` to run for as long as the runtime does, or
    both. Settings specific to the agent are a pydantic model named in `config_model`; the
    YAML keys of the agent beyond the common ones (``kind``, ``max_concurrency``, ...) are
    validated against it.

    Args:
        name: The name it is called by (defaults to the class's `name`).
        config: Its settings; defaults to ``config_model()``.

    Raises:
        ValueError: The name is not a valid agent name.
    """

    name: str = ""
    """Default name of agents of this class."""
    description: str = ""
    """One line saying what it does (shown by service discovery)."""
    version: str = "0.1.0"
    """Semantic version announced on ``$SRV.INFO``."""
    config_model: ClassVar[type[BaseModel]] = NoConfig
    """The pydantic model of its settings."""

    def __init__(self, *, name: str | None = None, config: ConfigT | None = None) -> None:
        self.name = validate_agent_name(name or self.name or type(self).__name__.lower())
        self.config: ConfigT = config if config is not None else self.config_model()  # type: ignore[assignment]

    async def execute(self, task: Task, ctx: Context) -> Any:
        """Answer one task; the return value is the reply's ``output``.

        Raises:
            MeshError: Travels to the caller with its code; any other exception is
                reported as ``agent_error``.
        """
        raise NotImplementedError

    async def start(self, ctx: Context) -> None:
        """Run until cancelled (subscribe with ``ctx.subscribe``, publish with ``ctx.emit``)."""
        raise NotImplementedError

    @property
    def handles_tasks(self) -> bool:
        """Whether this agent answers tasks (it overrides `execute`)."""
        return type(self).execute is not Agent.execute

    @property
    def runs_in_background(self) -> bool:
        """Whether this agent has a long-running part (it overrides `start`)."""
        return type(self).start is not Agent.start

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
