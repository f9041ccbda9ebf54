"""AutoGen Core's side of the in-process figure: an agent answering a message with itself.

Its own module so that the ``bench`` extra is imported only when the figure is built, and at
module level because AutoGen reads the handler's type hints to route messages by type.
"""

from __future__ import annotations

from dataclasses import dataclass

from autogen_core import AgentId, MessageContext, RoutedAgent, message_handler

__all__ = ["AGENT", "Echo", "EchoAgent"]

AGENT = AgentId("echo", "default")


@dataclass
class Echo:
    """The message the agent answers (AutoGen routes messages by type)."""

    text: str


class EchoAgent(RoutedAgent):
    """Answers every `Echo` with the message it got."""

    def __init__(self) -> None:
        super().__init__("Replies with the message it got.")

    @message_handler
    async def on_echo(self, message: Echo, ctx: MessageContext) -> Echo:
        return message
