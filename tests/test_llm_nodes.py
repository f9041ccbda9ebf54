"""Usage and cost roll up across processes: nodes on NATS, each making scripted model calls."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgpack
import nats
import pytest
from nats.aio.msg import Msg

from mesh.llm.instrument import LLMCall
from mesh.runtime import DistributedRuntime
from mesh.subjects import TELEMETRY_LLM
from tests.nodes import run_node

pytestmark = pytest.mark.anyio

CONFIG = """
agents:
  chief:
    kind: tests.support:ChiefAgent
  writer:
    kind: tests.support:WriterAgent
  editor:
    kind: tests.support:WriterAgent
llm:
  scripted:
    pen:
      rules:
        - match: "^draft"
          text: "a first draft, rather short"
        - match: "^review"
          text: "reviewed: fine"
      default: "all done"
  prices:
    "scripted:pen": {input: 3.0, output: 15.0}
"""


async def test_top_level_reply_carries_the_cost_of_the_whole_tree(
    nats_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(CONFIG)
    calls: list[LLMCall] = []
    all_calls = anyio.Event()

    async def on_call(msg: Msg) -> None:
        calls.append(LLMCall.model_validate(msgpack.unpackb(msg.data)))
        if len(calls) == 5:
            all_calls.set()

    watcher = await nats.connect(nats_url)
    await watcher.subscribe(TELEMETRY_LLM, cb=on_call)
    await watcher.flush()
    try:
        async with (
            run_node("chief", nats_url=nats_url, config=config, log_dir=tmp_path),
            run_node("writer", nats_url=nats_url, config=config, log_dir=tmp_path),
            run_node("editor", nats_url=nats_url, config=config, log_dir=tmp_path),
            DistributedRuntime(nats_url) as client,
        ):
            with anyio.fail_after(20):
                reply = await client.request("chief", "mesh")
                await all_calls.wait()
    finally:
        await watcher.close()
    assert reply.output == ["reviewed: fine", "reviewed: fine", "all done"]
    assert sorted(c.agent or "" for c in calls) == ["chief", "editor", "editor", "writer", "writer"]
    tokens_in = sum(c.input_tokens for c in calls)
    tokens_out = sum(c.output_tokens for c in calls)
    assert reply.usage.model_dump() == {
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "cost_usd": pytest.approx(sum(c.cost_usd or 0 for c in calls)),
        "calls": 5,
    }
    assert reply.usage.cost_usd == pytest.approx((tokens_in * 3.0 + tokens_out * 15.0) / 1e6)


BUILTIN_CONFIG = """
agents:
  writer:
    kind: llm
    model: scripted:pen
    prompt: "Write about {input}"
  triage:
    kind: classifier
    model: scripted:sorter
    categories: [billing, technical]
    default: billing
llm:
  scripted:
    pen:
      default: "a line about nodes"
    sorter:
      default:
        output: {category: technical, confidence: 0.9, reasoning: "error code", alternatives: []}
  prices:
    "scripted:pen": {input: 1.0, output: 2.0}
    "scripted:sorter": {input: 1.0, output: 2.0}
"""


async def test_built_in_agents_run_as_nodes_from_yaml(nats_url: str, tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(BUILTIN_CONFIG)
    async with (
        run_node("writer", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("triage", nats_url=nats_url, config=config, log_dir=tmp_path),
        DistributedRuntime(nats_url) as client,
    ):
        with anyio.fail_after(20):
            written = await client.request("writer", "meshes")
            sorted_ = await client.request("triage", "error E42 on start")
    assert (written.output, written.usage.calls) == ("a line about nodes", 1)
    assert written.usage.cost_usd is not None
    assert sorted_.output == {
        "category": "technical",
        "confidence": 0.9,
        "reasoning": "error code",
        "alternatives": [],
        "fell_back": False,
    }
