"""Built-in agents, each usable from YAML by its kind name (see `mesh.config.BUILTIN_KINDS`)."""

from agents.aggregator import AggregatorAgent, AggregatorConfig
from agents.classifier import ClassifierAgent, ClassifierConfig
from agents.critic import CriticAgent, CriticConfig
from agents.echo import EchoAgent
from agents.llm import LLMAgent, LLMAgentConfig
from agents.planner import Plan, PlannerAgent, PlannerConfig, Step
from agents.react import ReactAgent, ReactConfig
from agents.retriever import RetrieverAgent, RetrieverConfig
from agents.tools import AgentTool, Tool
from agents.upper import UpperAgent, UpperConfig

__all__ = [
    "AgentTool",
    "AggregatorAgent",
    "AggregatorConfig",
    "ClassifierAgent",
    "ClassifierConfig",
    "CriticAgent",
    "CriticConfig",
    "EchoAgent",
    "LLMAgent",
    "LLMAgentConfig",
    "Plan",
    "PlannerAgent",
    "PlannerConfig",
    "ReactAgent",
    "ReactConfig",
    "RetrieverAgent",
    "RetrieverConfig",
    "Step",
    "Tool",
    "UpperAgent",
    "UpperConfig",
]
