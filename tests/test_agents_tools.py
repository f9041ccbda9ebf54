"""Tools, the `react` loop, embeddings and the `retriever`: offline, on scripted models and the
hash embedder, through the runtime on both buses where an agent is involved."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import httpx2
import numpy as np
import pytest
from pydantic import Field, SecretStr, ValidationError

from agents.react import DEFAULT_SYSTEM_PROMPT, ReactAgent, ReactConfig
from agents.retriever import (
    Hit,
    InMemoryVectorStore,
    Passage,
    RetrieverAgent,
    RetrieverConfig,
    load_passages,
)
from agents.tools import AgentTool, Tool, ToolArgumentsError, resolve_tools
from agents.upper import UpperAgent
from mesh.config import load_config
from mesh.context import Context
from mesh.envelope import ErrorInfo, Usage
from mesh.errors import AuthFailedError
from mesh.llm.config import LLMConfig
from mesh.llm.embeddings import Embeddings, HashEmbedder, OpenAIEmbedder
from mesh.llm.model import ProviderConfig
from mesh.llm.pricing import Price
from mesh.llm.registry import ModelRegistry
from mesh.llm.scripted import ScriptedModel, ScriptedReply
from mesh.llm.types import ChatMessage, ToolCall, ToolSpec
from mesh.refs import Pieces
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime

pytestmark = pytest.mark.anyio

MODEL = "scripted:react"
PRICE = Price(input=2.0, output=8.0)  # USD per million tokens
EMBED_MODEL = "openai:text-embedding-3-small"
EMBED_PRICE = Price(input=0.5, output=0.0)  # not genai-prices' figure: proves the override is used


# -- tools used by the tests (importable as tests.test_agents_tools:<name>) --------------------


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first term.
        b: The second term.
    """
    return a + b


async def multiply(a: float, b: float = 2.0) -> float:
    """Multiply two numbers."""
    return a * b


def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b


def calls(*wanted: tuple[str, dict[str, Any]]) -> ScriptedReply:
    """A scripted reply calling these tools."""
    return ScriptedReply.model_validate(
        {"tool_calls": [{"name": name, "arguments": arguments} for name, arguments in wanted]}
    )


@pytest.fixture(params=["memory", "nats"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    llm = LLMConfig(prices={MODEL: PRICE, EMBED_MODEL: EMBED_PRICE})
    if request.param == "memory":
        return LocalRuntime(llm=llm)
    return DistributedRuntime(request.getfixturevalue("nats_url"), llm=llm)


async def ask(runtime: Runtime, agent: str, *inputs: Any) -> list[Any]:
    """Start the runtime, send each input in turn, and return the replies."""
    async with runtime:
        with anyio.fail_after(10):
            return [await runtime.request(agent, value) for value in inputs]


# -- tools -------------------------------------------------------------------------------------


def test_tool_schema_comes_from_the_signature_and_docstring() -> None:
    def convert(
        amount: float,
        unit: Literal["m", "km"] = "m",
        *,
        tags: list[str] | None = None,
        digits: Annotated[int, Field(ge=0, description="Decimals to keep.")] = 2,
        ctx: Context | None = None,
    ) -> str:
        """Convert a length.

        Longer explanation that the model does not need.

        Args:
            amount: How much, in the unit
                given.
            unit: The unit of the amount.
            digits: Overridden by the annotation.
        """
        return f"{amount}{unit}"

    assert Tool(convert).spec == ToolSpec(
        name="convert",
        description="Convert a length.",
        parameters={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "amount": {"type": "number", "description": "How much, in the unit given."},
                "unit": {
                    "type": "string",
                    "enum": ["m", "km"],
                    "default": "m",
                    "description": "The unit of the amount.",
                },
                "tags": {
                    "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                    "default": None,
                },
                "digits": {
                    "type": "integer",
                    "minimum": 0,
                    "default": 2,
                    "description": "Decimals to keep.",
                },
            },
            "required": ["amount"],
        },
    )


async def test_tool_parameters_may_shadow_pydantic_names() -> None:
    def fetch(json: bool, model_name: str = "x") -> str:
        return f"{json} {model_name}"

    assert await Tool(fetch).run({"json": True, "model_name": "y"}) == "True y"


def test_tool_name_and_description_can_be_given() -> None:
    tool = Tool(add, name="plus", description="Sum.")
    assert (tool.spec.name, tool.spec.description) == ("plus", "Sum.")


def test_tool_with_an_invalid_name_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid tool name '<lambda>'"):
        Tool(lambda x: x)


async def test_invalid_arguments_raise_a_clear_error() -> None:
    with pytest.raises(ToolArgumentsError) as caught:
        await Tool(add).run({"a": "two", "c": 1})
    assert str(caught.value) == (
        "invalid arguments for tool 'add': a: Input should be a valid integer, unable to parse "
        "string as an integer; b: Field required; c: Extra inputs are not permitted"
    )


async def test_sync_tool_runs_on_validated_arguments() -> None:
    assert await Tool(add).run({"a": "2", "b": 3}) == 5


async def test_async_tool_runs_with_defaults() -> None:
    assert await Tool(multiply).run({"a": 4}) == 8.0


async def test_tool_taking_a_context_refuses_to_run_without_one() -> None:
    with pytest.raises(ValueError, match="needs the calling agent's context"):
        await AgentTool("upper", "Upper-cases a text.").run({"input": "x"})


def test_agent_tool_takes_one_text_input() -> None:
    assert AgentTool("upper", "Upper-cases a text.").spec == ToolSpec(
        name="upper",
        description="Upper-cases a text.",
        parameters={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "input": {
                    "type": "string",
                    "description": "What to send to the agent: a question, an instruction "
                    "or a text.",
                }
            },
            "required": ["input"],
        },
    )


def test_tools_resolve_from_config_references() -> None:
    tools = resolve_tools(
        [Pieces().resolve("tests.test_agents_tools:add")], {"upper": "Upper-cases a text."}
    )
    assert {name: type(tool) for name, tool in tools.items()} == {"add": Tool, "upper": AgentTool}


def test_two_tools_of_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match="two tools are named 'add'"):
        resolve_tools(
            [Pieces().resolve("tests.test_agents_tools:add")], extra=[Tool(multiply, name="add")]
        )


def test_yaml_settings_name_function_tools_and_agent_tools(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(
        "agents:\n"
        "  solver:\n"
        "    kind: agents.react:ReactAgent\n"
        "    model: scripted:react\n"
        "    tools: ['tests.test_agents_tools:add']\n"
        "    agent_tools: {upper: Upper-cases a text.}\n"
        "  upper:\n"
        "    kind: upper\n",
        encoding="utf-8",
    )
    agent = load_config(path, environ={}).build_agent("solver")
    assert isinstance(agent, ReactAgent)
    assert [tool.spec for tool in agent.tools.values()] == [
        Tool(add).spec,
        AgentTool("upper", "Upper-cases a text.").spec,
    ]


def test_config_with_an_unimportable_tool_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"cannot import 'tests\.nowhere:add'"):
        ReactConfig(model=MODEL, tools=("tests.nowhere:add",))


# -- react -------------------------------------------------------------------------------------


def arithmetic_script() -> ScriptedModel:
    return ScriptedModel(
        "react",
        replies=[
            calls(("add", {"a": 2, "b": 3})),
            calls(("multiply", {"a": 5, "b": 4})),
            "The answer is 20.",
        ],
    )


def arithmetic_agent(**settings: Any) -> ReactAgent:
    tools = ("tests.test_agents_tools:add", "tests.test_agents_tools:multiply")
    return ReactAgent(config=ReactConfig(model=MODEL, tools=tools, **settings))


async def test_react_runs_the_tools_called_then_answers(runtime: Runtime) -> None:
    runtime.models.register(arithmetic_script())
    runtime.register(arithmetic_agent())
    [reply] = await ask(runtime, "react", "What is (2 + 3) * 4?")
    assert reply.output == {
        "answer": "The answer is 20.",
        "steps": 3,
        "tool_calls": [
            {"name": "add", "arguments": {"a": 2, "b": 3}, "result": 5},
            {"name": "multiply", "arguments": {"a": 5, "b": 4}, "result": 20.0},
        ],
    }


async def test_react_sends_tool_results_back_in_the_conversation(runtime: Runtime) -> None:
    model = arithmetic_script()
    runtime.models.register(model)
    agent = arithmetic_agent()
    runtime.register(agent)
    await ask(runtime, "react", "What is (2 + 3) * 4?")
    last = model.requests[-1]
    assert last.messages == (
        ChatMessage(role="user", content="What is (2 + 3) * 4?"),
        ChatMessage(
            role="assistant",
            tool_calls=(ToolCall(id="call_1", name="add", arguments={"a": 2, "b": 3}),),
        ),
        ChatMessage(role="tool", content="5", tool_call_id="call_1"),
        ChatMessage(
            role="assistant",
            tool_calls=(ToolCall(id="call_2", name="multiply", arguments={"a": 5, "b": 4}),),
        ),
        ChatMessage(role="tool", content="20.0", tool_call_id="call_2"),
    )
    assert (last.system, last.tools) == (
        DEFAULT_SYSTEM_PROMPT,
        (Tool(add).spec, Tool(multiply).spec),
    )


async def test_react_counts_every_model_call_in_the_usage(runtime: Runtime) -> None:
    model = arithmetic_script()
    runtime.models.register(model)
    runtime.register(arithmetic_agent())
    [reply] = await ask(runtime, "react", "What is (2 + 3) * 4?")
    replay = arithmetic_script()  # the same script answers the same requests the same way
    responses = [await replay.complete(request) for request in model.requests]
    tokens_in = sum(r.usage.input_tokens for r in responses)
    tokens_out = sum(r.usage.output_tokens for r in responses)
    assert reply.usage.model_dump() == {
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "cost_usd": pytest.approx((tokens_in * 2.0 + tokens_out * 8.0) / 1_000_000),
        "calls": 3,
    }


async def test_react_takes_a_question_object(runtime: Runtime) -> None:
    runtime.models.register(ScriptedModel("react", replies=["Hello."]))
    runtime.register(arithmetic_agent())
    [reply] = await ask(runtime, "react", {"question": "Hi?"})
    assert reply.output == {"answer": "Hello.", "steps": 1, "tool_calls": []}


async def test_react_refuses_an_input_without_a_question(runtime: Runtime) -> None:
    runtime.register(arithmetic_agent())
    [reply] = await ask(runtime, "react", {"query": "Hi?"})
    assert reply.error == ErrorInfo(
        code="bad_schema",
        message="react input: question: Field required; query: Extra inputs are not permitted",
    )


async def test_a_failing_tool_is_reported_to_the_model_which_recovers(runtime: Runtime) -> None:
    model = ScriptedModel(
        "react",
        replies=[
            calls(("divide", {"a": 1, "b": 0})),
            calls(("divide", {"a": 1, "b": 4})),
            "1/4 is 0.25.",
        ],
    )
    runtime.models.register(model)
    runtime.register(ReactAgent(config=ReactConfig(model=MODEL), tools=[Tool(divide)]))
    [reply] = await ask(runtime, "react", "What is 1/0, or else 1/4?")
    assert reply.output == {
        "answer": "1/4 is 0.25.",
        "steps": 3,
        "tool_calls": [
            {
                "name": "divide",
                "arguments": {"a": 1, "b": 0},
                "error": "ZeroDivisionError: float division by zero",
            },
            {"name": "divide", "arguments": {"a": 1, "b": 4}, "result": 0.25},
        ],
    }
    assert model.requests[1].messages[-1] == ChatMessage(
        role="tool",
        content="Error: ZeroDivisionError: float division by zero",
        tool_call_id="call_1",
    )


async def test_an_unknown_tool_is_reported_to_the_model(runtime: Runtime) -> None:
    model = ScriptedModel("react", replies=[calls(("sqrt", {"x": 2})), "I cannot."])
    runtime.models.register(model)
    runtime.register(arithmetic_agent())
    [reply] = await ask(runtime, "react", "sqrt(2)?")
    error = "unknown tool 'sqrt' (the tools are: add, multiply)"
    assert reply.output == {
        "answer": "I cannot.",
        "steps": 2,
        "tool_calls": [{"name": "sqrt", "arguments": {"x": 2}, "error": error}],
    }
    assert model.requests[1].messages[-1].content == f"Error: {error}"


async def test_invalid_arguments_are_reported_to_the_model(runtime: Runtime) -> None:
    model = ScriptedModel("react", replies=[calls(("add", {"a": 1})), "Missing b."])
    runtime.models.register(model)
    runtime.register(arithmetic_agent())
    [reply] = await ask(runtime, "react", "1 + ?")
    error = "invalid arguments for tool 'add': b: Field required"
    assert reply.output == {
        "answer": "Missing b.",
        "steps": 2,
        "tool_calls": [{"name": "add", "arguments": {"a": 1}, "error": error}],
    }
    assert model.requests[1].messages[-1].content == f"Error: {error}"


async def test_react_fails_clearly_past_max_steps(runtime: Runtime) -> None:
    runtime.models.register(ScriptedModel("react", default=calls(("add", {"a": 1, "b": 1}))))
    runtime.register(arithmetic_agent(max_steps=2))
    [reply] = await ask(runtime, "react", "Loop forever.")
    assert reply.error == ErrorInfo(
        code="agent_error",
        message="react gave no answer within max_steps=2 model calls",
        details={
            "max_steps": 2,
            "tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 1}, "result": 2}],
        },
    )
    assert reply.usage.calls == 2


async def test_react_calls_another_agent_as_a_tool(runtime: Runtime) -> None:
    model = ScriptedModel(
        "react", replies=[calls(("upper", {"input": "quiet please"})), "It is QUIET PLEASE."]
    )
    runtime.models.register(model)
    runtime.register(UpperAgent())
    config = ReactConfig(model=MODEL, agent_tools={"upper": "Upper-cases a text."})
    runtime.register(ReactAgent(config=config))
    [reply] = await ask(runtime, "react", "Shout 'quiet please'.")
    assert reply.output == {
        "answer": "It is QUIET PLEASE.",
        "steps": 2,
        "tool_calls": [
            {"name": "upper", "arguments": {"input": "quiet please"}, "result": "QUIET PLEASE"}
        ],
    }
    assert model.requests[1].messages[-1].content == "QUIET PLEASE"


# -- embeddings --------------------------------------------------------------------------------


async def test_hash_embeddings_are_deterministic_unit_vectors() -> None:
    first = await HashEmbedder(dimensions=64).embed(["Red apples", "red APPLES!"])
    again = await HashEmbedder(dimensions=64).embed(["red apples"])
    assert first.vectors[0] == first.vectors[1] == again.vectors[0]
    assert len(first.vectors[0]) == 64
    assert math.fsum(v * v for v in first.vectors[0]) == pytest.approx(1.0)
    assert first.input_tokens == 0


def base64_vector(values: list[float]) -> str:
    return base64.b64encode(np.asarray(values, dtype=np.float32).tobytes()).decode()


def openai_transport(seen: list[httpx2.Request], status: int = 200) -> httpx2.MockTransport:
    """OpenAI's embeddings endpoint: answers in base64 (as the SDK asks), out of order."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        if status != 200:
            error = {"message": "Incorrect API key provided: sk-test.", "code": "invalid_api_key"}
            return httpx2.Response(status, json={"error": error})
        texts = json.loads(request.content)["input"]
        data = [
            {"object": "embedding", "index": i, "embedding": base64_vector([1.0, i / 4])}
            for i in reversed(range(len(texts)))
        ]
        usage = {"prompt_tokens": 3 * len(texts), "total_tokens": 3 * len(texts)}
        return httpx2.Response(
            200,
            json={
                "object": "list",
                "model": "text-embedding-3-small",
                "data": data,
                "usage": usage,
            },
        )

    return httpx2.MockTransport(handle)


def openai_embedder(seen: list[httpx2.Request], status: int = 200) -> OpenAIEmbedder:
    config = ProviderConfig(api_key=SecretStr("sk-test"), max_retries=0)
    client = httpx2.AsyncClient(transport=openai_transport(seen, status))
    return OpenAIEmbedder("text-embedding-3-small", config, http_client=client)


async def test_openai_embedder_sends_the_texts_and_reads_vectors_in_order() -> None:
    seen: list[httpx2.Request] = []
    embedder = openai_embedder(seen)
    embeddings = await embedder.embed(["first", "second"])
    await embedder.aclose()
    assert embeddings == Embeddings(vectors=[[1.0, 0.0], [1.0, 0.25]], input_tokens=6)
    assert [(r.method, str(r.url), r.headers["authorization"]) for r in seen] == [
        ("POST", "https://api.openai.com/v1/embeddings", "Bearer sk-test")
    ]
    assert json.loads(seen[0].content) == {
        "model": "text-embedding-3-small",
        "input": ["first", "second"],
        "encoding_format": "base64",
    }


async def test_openai_embedder_refused_key_is_auth_failed_without_the_key() -> None:
    embedder = openai_embedder([], status=401)
    with pytest.raises(AuthFailedError) as caught:
        await embedder.embed(["anything"])
    await embedder.aclose()
    assert (caught.value.message, caught.value.details) == (
        "openai:text-embedding-3-small: HTTP 401: Incorrect API key provided: ***.",
        {"status": 401},
    )


def test_real_embedders_are_refused_offline() -> None:
    with pytest.raises(AuthFailedError, match="switched off"):
        ModelRegistry(environ={"MESH_LLM__OFFLINE": "1"}).embedder(EMBED_MODEL)


@pytest.mark.parametrize(
    ("name", "message"),
    [("hash:x", "'hash' or 'hash:<dimensions>'"), ("cohere:embed", "unknown embedder provider")],
)
def test_unknown_embedder_names_are_refused_by_the_config(name: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RetrieverConfig(embedder=name)


# -- vector store ------------------------------------------------------------------------------


async def test_in_memory_store_replaces_a_vector_added_again() -> None:
    store = InMemoryVectorStore()
    await store.add(["a", "b"], [[1.0, 0.0], [0.0, 1.0]], [{"n": 1}, {"n": 2}])
    await store.add(["a"], [[0.0, 3.0]], [{"n": 3}])
    assert await store.search([0.0, 1.0], 5) == [Hit("a", 1.0, {"n": 3}), Hit("b", 1.0, {"n": 2})]


async def test_in_memory_store_refuses_vectors_of_another_length() -> None:
    store = InMemoryVectorStore()
    await store.add(["a"], [[1.0, 0.0]], [{}])
    with pytest.raises(ValueError, match="3 dimensions"):
        await store.search([1.0, 0.0, 0.0], 1)


# -- retriever ---------------------------------------------------------------------------------

CORPUS = (
    "red apples grow on trees",
    "the red car is fast",
    "blue sky over the sea",
    {"id": "pears", "text": "apples and pears", "metadata": {"source": "orchard.md"}},
)


def retriever(**settings: Any) -> RetrieverAgent:
    return RetrieverAgent(config=RetrieverConfig.model_validate({"passages": CORPUS, **settings}))


async def test_retriever_returns_the_top_k_closest_first(runtime: Runtime) -> None:
    runtime.register(retriever())
    [reply] = await ask(runtime, "retriever", "Red apples?")
    # Hashed bag of words: cosine = shared words / sqrt(words of query * words of passage).
    assert reply.output == {
        "query": "Red apples?",
        "passages": [
            {
                "id": "0",
                "text": "red apples grow on trees",
                "score": pytest.approx(2 / math.sqrt(2 * 5)),
                "metadata": {},
            },
            {
                "id": "pears",
                "text": "apples and pears",
                "score": pytest.approx(1 / math.sqrt(2 * 3)),
                "metadata": {"source": "orchard.md"},
            },
            {
                "id": "1",
                "text": "the red car is fast",
                "score": pytest.approx(1 / math.sqrt(2 * 5)),
                "metadata": {},
            },
        ],
    }


async def test_retriever_takes_k_from_the_query(runtime: Runtime) -> None:
    runtime.register(retriever())
    [reply] = await ask(runtime, "retriever", {"query": "blue sea", "k": 1})
    assert [(p["id"], p["score"]) for p in reply.output["passages"]] == [
        ("2", pytest.approx(2 / math.sqrt(2 * 5)))
    ]


async def test_retriever_leaves_out_passages_below_min_score(runtime: Runtime) -> None:
    runtime.register(retriever(min_score=0.5))
    [reply] = await ask(runtime, "retriever", "red apples")
    assert [p["id"] for p in reply.output["passages"]] == ["0"]


async def test_retriever_with_an_empty_corpus_finds_nothing(runtime: Runtime) -> None:
    runtime.register(RetrieverAgent())
    [reply] = await ask(runtime, "retriever", "anything")
    assert reply.output == {"query": "anything", "passages": []}


async def test_retriever_refuses_a_blank_query(runtime: Runtime) -> None:
    runtime.register(retriever())
    [reply] = await ask(runtime, "retriever", "  ")
    assert reply.error == ErrorInfo(
        code="bad_schema", message="retriever input: query: Value error, the query is blank"
    )


async def test_retriever_embeds_the_corpus_once_and_counts_each_call(runtime: Runtime) -> None:
    runtime.register(retriever())
    first, second = await ask(runtime, "retriever", "red", "blue")
    # The first task embeds the corpus and its query, the second only its query; the hash
    # embedder spends no tokens, so it costs nothing.
    assert (first.usage, second.usage) == (Usage(calls=2), Usage(calls=1))


async def test_retriever_prices_embeddings_with_the_runtime_price_book(runtime: Runtime) -> None:
    seen: list[httpx2.Request] = []
    embedder = openai_embedder(seen)
    config = RetrieverConfig.model_validate({"passages": CORPUS, "embedder": EMBED_MODEL})
    runtime.register(RetrieverAgent(config=config, embedder=embedder))
    [reply] = await ask(runtime, "retriever", "red apples")
    await embedder.aclose()
    tokens = 3 * len(CORPUS) + 3  # the mock counts 3 tokens a text
    assert reply.usage.model_dump() == {
        "input_tokens": tokens,
        "output_tokens": 0,
        "cost_usd": pytest.approx(tokens * 0.5 / 1_000_000),
        "calls": 2,
    }
    assert len(seen) == 2


async def test_retriever_reads_a_corpus_file(runtime: Runtime, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("red apples grow on trees\n\nthe red car\nis fast\n", encoding="utf-8")
    runtime.register(RetrieverAgent(config=RetrieverConfig(path=corpus, top_k=1)))
    [reply] = await ask(runtime, "retriever", "fast car")
    assert [(p["id"], p["text"]) for p in reply.output["passages"]] == [
        ("1", "the red car\nis fast")
    ]


async def test_retriever_with_a_missing_corpus_file_fails_clearly(
    runtime: Runtime, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.jsonl"
    runtime.register(RetrieverAgent(config=RetrieverConfig(path=missing)))
    [reply] = await ask(runtime, "retriever", "anything")
    assert reply.error is not None
    assert (reply.error.code, reply.error.message.startswith("retriever: cannot load")) == (
        "agent_error",
        True,
    )


def test_jsonl_corpus_lines_are_texts_or_passages() -> None:
    text = (
        '"plain text"\n\n'
        '{"text": "with metadata", "metadata": {"page": 2}}\n'
        '{"id": "x", "text": "own id"}\n'
    )
    assert load_passages(Path("c.jsonl"), text) == [
        Passage(id="0", text="plain text"),
        Passage(id="1", text="with metadata", metadata={"page": 2}),
        Passage(id="x", text="own id"),
    ]


def test_passages_with_one_id_are_refused() -> None:
    with pytest.raises(ValidationError, match="two passages have the id 'a'"):
        RetrieverConfig.model_validate(
            {"passages": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}
        )


def test_a_store_that_is_not_a_vector_store_is_refused() -> None:
    config = RetrieverConfig(store="collections:OrderedDict")
    with pytest.raises(ValueError, match="is not a VectorStore"):
        RetrieverAgent(config=config)
