"""agent-mesh: LLM agents as an event-driven mesh on NATS."""
