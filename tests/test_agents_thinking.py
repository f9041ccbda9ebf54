"""The built-in agents that think with a model: llm, classifier, planner, critic, aggregator.

Each runs inside a runtime on both buses against a scripted model; the voting they share is
tested directly, with properties.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from agents._voting import (
    Ballot,
    Outcome,
    by_confidence,
    majority,
    normalise,
    tally,
    unanimous,
    vote,
    weighted,
)
from agents.aggregator import AggregatorAgent, AggregatorConfig
from agents.classifier import ClassifierAgent, ClassifierConfig, Verdict
from agents.critic import Assessment, CriticAgent, CriticConfig, assessment_for
from agents.llm import LLMAgent, LLMAgentConfig
from agents.planner import Plan, PlannerAgent, PlannerConfig, bounded_plan, find_cycle
from mesh.agent import Agent
from mesh.config import ConfigError, ConfigProblem, load_config
from mesh.envelope import ErrorInfo, Reply, Usage
from mesh.llm.scripted import ScriptedModel, ScriptedReply
from mesh.llm.types import ChatMessage, ModelRequest
from mesh.runtime import Runtime

pytestmark = pytest.mark.anyio


async def run(runtime: Runtime, agent: Agent[Any], input: Any, *models: ScriptedModel) -> Reply:
    """Host ``agent`` (and ``models``) in ``runtime`` and send it one task."""
    for model in models:
        runtime.models.register(model)
    runtime.register(agent)
    async with runtime:
        with anyio.fail_after(10):
            return await runtime.request(agent.name, input)


def outcome(reply: Reply) -> tuple[Any, ErrorInfo | None, int]:
    """What a test compares: the output, the error and how many model calls were counted."""
    return reply.output, reply.error, reply.usage.calls


def invalid_output(model: str, output: str, raw: Any, errors: list[dict[str, str]]) -> ErrorInfo:
    """The error a structured output that did not fit twice comes back as."""
    listed = "; ".join(f"{e['field']}: {e['problem']}" for e in errors)
    return ErrorInfo(
        code="invalid_output",
        message=f"{model} gave no valid {output} in two tries: {listed}",
        retryable=False,
        details={"raw_output": json.dumps(raw), "errors": errors},
    )


def bad_schema(message: str) -> ErrorInfo:
    return ErrorInfo(code="bad_schema", message=message, retryable=False)


def asked(text: str, *, system: str | None = None, **options: Any) -> ModelRequest:
    return ModelRequest(
        messages=(ChatMessage(role="user", content=text),), system=system, **options
    )


# -- llm ---------------------------------------------------------------------------------------


def llm_agent(**settings: Any) -> LLMAgent:
    return LLMAgent(config=LLMAgentConfig(model="scripted:writer", **settings))


async def test_llm_fills_the_template_with_text_and_answers_the_model_text(
    runtime: Runtime,
) -> None:
    model = ScriptedModel("writer", replies=["Bonjour"])
    agent = llm_agent(
        prompt="Translate to French: {input}",
        system="You translate.",
        temperature=0.2,
        max_tokens=50,
    )

    reply = await run(runtime, agent, "Hello", model)

    assert outcome(reply) == ("Bonjour", None, 1)
    assert model.requests == [
        asked("Translate to French: Hello", system="You translate.", temperature=0.2, max_tokens=50)
    ]


async def test_llm_fills_the_template_from_the_keys_of_an_object(runtime: Runtime) -> None:
    model = ScriptedModel("writer", replies=["done"])
    agent = llm_agent(prompt="Write {count} lines about {topic} for {audience}.")

    reply = await run(
        runtime, agent, {"topic": "cats", "count": 3, "audience": ["kids", "cats"]}, model
    )

    assert outcome(reply) == ("done", None, 1)
    assert model.requests == [asked('Write 3 lines about cats for ["kids", "cats"].')]


async def test_llm_input_of_an_object_without_an_input_key_is_the_object_as_json(
    runtime: Runtime,
) -> None:
    model = ScriptedModel("writer", replies=["ok"])

    reply = await run(runtime, llm_agent(prompt="Check {input}"), {"a": 1}, model)

    assert outcome(reply) == ("ok", None, 1)
    assert model.requests == [asked('Check {"a": 1}')]


async def test_llm_template_field_missing_from_the_input_is_bad_schema_naming_it(
    runtime: Runtime,
) -> None:
    agent = llm_agent(prompt="About {topic} for {audience}")

    reply = await run(runtime, agent, {"topic": "cats"}, ScriptedModel("writer"))

    assert outcome(reply) == (
        None,
        bad_schema(
            "llm input: the prompt template needs 'audience', which the input lacks "
            "(it has: input, topic)"
        ),
        0,
    )


async def test_llm_input_that_is_neither_text_nor_object_is_bad_schema(runtime: Runtime) -> None:
    reply = await run(runtime, llm_agent(), [1, 2], ScriptedModel("writer"))

    assert outcome(reply) == (
        None,
        bad_schema("llm input: takes text or an object of template fields, not list"),
        0,
    )


async def test_llm_format_spec_that_does_not_suit_the_value_is_bad_schema(
    runtime: Runtime,
) -> None:
    reply = await run(runtime, llm_agent(prompt="{n:d} items"), {"n": "x"}, ScriptedModel("w"))

    assert outcome(reply) == (
        None,
        bad_schema(
            "llm input: the prompt template cannot be filled: Unknown format code 'd' for "
            "object of type 'str'"
        ),
        0,
    )


@pytest.mark.parametrize(
    ("prompt", "problem"),
    [
        ("About {topic.__class__}", "template field {topic.__class__} is not a plain name"),
        ("Item {0}", "template field {0} is not a plain name"),
        ("About {topic", "expected '}' before end of string"),
        ("About {topic!x}", "template field {topic} has an unknown conversion !x"),
        ("{n:{width}}", "template field {n} has a nested field in its format spec"),
    ],
)
def test_llm_config_refuses_a_prompt_that_is_not_a_safe_template(prompt: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        LLMAgentConfig(prompt=prompt)


def test_llm_config_refuses_a_model_name_without_provider() -> None:
    with pytest.raises(ValidationError, match="model names are 'provider:model'"):
        LLMAgentConfig(model="gpt-4o-mini")


# -- classifier --------------------------------------------------------------------------------


def classifier(**settings: Any) -> ClassifierAgent:
    return ClassifierAgent(
        config=ClassifierConfig(
            model="scripted:sorter",
            categories=["Billing", "Technical  Issue", "other"],
            default="Other",
            **settings,
        )
    )


def verdict(category: str, confidence: float, *alternatives: tuple[str, float]) -> ScriptedReply:
    return ScriptedReply(
        output={
            "category": category,
            "confidence": confidence,
            "reasoning": "it says so",
            "alternatives": [{"category": c, "confidence": p} for c, p in alternatives],
        }
    )


async def test_classifier_answers_the_model_category_normalised(runtime: Runtime) -> None:
    model = ScriptedModel("sorter", replies=[verdict(" BILLING", 0.9, ("technical issue", 0.1))])

    reply = await run(runtime, classifier(), "I was charged twice", model)

    assert outcome(reply) == (
        {
            "category": "billing",
            "confidence": 0.9,
            "reasoning": "it says so",
            "alternatives": [{"category": "technical issue", "confidence": 0.1}],
            "fell_back": False,
        },
        None,
        1,
    )


async def test_classifier_takes_an_object_and_lists_the_categories_to_the_model(
    runtime: Runtime,
) -> None:
    model = ScriptedModel("sorter", replies=[verdict("other", 0.8)])
    agent = classifier(instructions="Refunds are billing.")

    reply = await run(runtime, agent, {"text": "hello"}, model)

    assert outcome(reply) == (
        {
            "category": "other",
            "confidence": 0.8,
            "reasoning": "it says so",
            "alternatives": [],
            "fell_back": False,
        },
        None,
        1,
    )
    assert model.requests == [
        asked(
            "hello",
            system="Classify the user's text into exactly one of these categories, written "
            "exactly as listed:\n- billing\n- technical issue\n- other\n\nRefunds are "
            "billing.\n\nGive your confidence from 0 to 1, your reasoning, and any other "
            "categories that could fit, with their confidence.",
            output_schema=Verdict.model_json_schema(),
            output_name="Verdict",
        )
    ]


async def test_classifier_unknown_category_falls_back_to_the_default(runtime: Runtime) -> None:
    model = ScriptedModel("sorter", replies=[verdict("weather", 0.95, ("billing", 0.3))])

    reply = await run(runtime, classifier(), "Is it raining?", model)

    assert outcome(reply) == (
        {
            "category": "other",
            "confidence": 0.0,
            "reasoning": "Fell back to the default 'other': the model's label 'weather' is not "
            "one of the categories. it says so",
            "alternatives": [{"category": "billing", "confidence": 0.3}],
            "fell_back": True,
        },
        None,
        1,
    )


async def test_classifier_low_confidence_falls_back_to_the_default(runtime: Runtime) -> None:
    model = ScriptedModel("sorter", replies=[verdict("billing", 0.4, ("other", 0.35))])

    reply = await run(runtime, classifier(threshold=0.6), "hmm", model)

    assert outcome(reply) == (
        {
            "category": "other",
            "confidence": 0.35,
            "reasoning": "Fell back to the default 'other': the model's confidence in 'billing' "
            "(0.4) is below the threshold (0.6). it says so",
            "alternatives": [{"category": "billing", "confidence": 0.4}],
            "fell_back": True,
        },
        None,
        1,
    )


async def test_classifier_invalid_output_twice_is_invalid_output(runtime: Runtime) -> None:
    second = {"category": "billing", "confidence": 2.0, "reasoning": "", "alternatives": []}
    model = ScriptedModel("sorter", replies=["billing", ScriptedReply(output=second)])

    reply = await run(runtime, classifier(), "I was charged twice", model)

    assert outcome(reply) == (
        None,
        invalid_output(
            "scripted:sorter",
            "Verdict",
            second,
            [{"field": "confidence", "problem": "Input should be less than or equal to 1"}],
        ),
        2,
    )


async def test_classifier_input_that_is_not_text_is_bad_schema(runtime: Runtime) -> None:
    reply = await run(runtime, classifier(), {"txt": "typo"}, ScriptedModel("sorter"))

    assert outcome(reply) == (
        None,
        bad_schema("classifier input: text: Field required; txt: Extra inputs are not permitted"),
        0,
    )


def test_classifier_config_normalises_category_names() -> None:
    config = ClassifierConfig(categories=[" Spam ", "NOT   spam"], default="not spam")

    assert (config.categories, config.default) == (("spam", "not spam"), "not spam")


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"categories": ["a", "b"], "default": "c"}, "default 'c' is not one of the categories"),
        ({"categories": ["a"], "default": "a"}, "at least 2 items"),
        ({"categories": ["a", " A"], "default": "a"}, r"categories repeat .*\['a'\]"),
        ({"categories": ["a", " "], "default": "a"}, "a category name is empty"),
        ({"categories": ["a", "b"], "default": "a", "threshold": 1.5}, "less than or equal to 1"),
    ],
)
def test_classifier_config_refuses_bad_settings(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        ClassifierConfig.model_validate(settings)


# -- planner -----------------------------------------------------------------------------------


def step(id: str, *depends_on: str, agent: str | None = None) -> dict[str, Any]:
    return {"id": id, "description": f"do {id}", "agent": agent, "depends_on": list(depends_on)}


def planner(**settings: Any) -> PlannerAgent:
    return PlannerAgent(config=PlannerConfig(model="scripted:planner", **settings))


async def test_planner_answers_a_validated_plan(runtime: Runtime) -> None:
    plan = {"steps": [step("s1", agent="search"), step("s2", "s1", agent="writer")]}
    model = ScriptedModel("planner", replies=[ScriptedReply(output=plan)])

    reply = await run(runtime, planner(agents=["search", "writer"]), "Write a report", model)

    assert outcome(reply) == (plan, None, 1)


async def test_planner_prompt_has_the_goal_context_limits_and_agents(runtime: Runtime) -> None:
    plan = {"steps": [step("s1", agent="search")]}
    model = ScriptedModel("planner", replies=[ScriptedReply(output=plan)])
    agent = planner(max_steps=3, agents=["search"], instructions="Be brief.")

    reply = await run(runtime, agent, {"goal": "Find it", "context": "It is lost."}, model)

    assert outcome(reply) == (plan, None, 1)
    assert model.requests == [
        asked(
            "Find it\n\nContext:\nIt is lost.",
            system="Plan how to reach the user's goal, in at most 3 steps. Give each step a "
            'short unique id (such as "s1"), what to do, the agent to do it, and the ids of '
            "the steps it depends on: only steps of this plan, and no step may depend on "
            "itself, directly or not.\n\nAvailable agents:\n- search\nSet each step's agent "
            "to one of them, or to null if none fits.\n\nBe brief.",
            output_schema=bounded_plan(max_steps=3).model_json_schema(),
            output_name="Plan",
        )
    ]


async def test_planner_cycle_is_sent_back_once_and_the_fixed_plan_taken(runtime: Runtime) -> None:
    cycle = {"steps": [step("a", "b"), step("b", "a")]}
    fixed = {"steps": [step("a"), step("b", "a")]}
    model = ScriptedModel(
        "planner", replies=[ScriptedReply(output=cycle), ScriptedReply(output=fixed)]
    )

    reply = await run(runtime, planner(), "goal", model)

    assert outcome(reply) == (fixed, None, 2)
    assert model.requests[1].messages[-1].content == (
        "Your answer did not match the required JSON schema:\n(root): Value error, the "
        "dependencies form a cycle: a -> b -> a\nAnswer again with only a JSON document that "
        "matches the schema."
    )


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        (
            [step("a", "b"), step("b", "c"), step("c", "a")],
            "the dependencies form a cycle: a -> b -> c -> a",
        ),
        ([step("a", "ghost")], "step 'a' depends on ['ghost'], which are not steps of the plan"),
    ],
    ids=["cycle", "dangling"],
)
async def test_planner_invalid_plan_twice_is_invalid_output(
    runtime: Runtime, steps: list[dict[str, Any]], problem: str
) -> None:
    plan = {"steps": steps}
    model = ScriptedModel("planner", default=ScriptedReply(output=plan))

    reply = await run(runtime, planner(), "goal", model)

    assert outcome(reply) == (
        None,
        invalid_output(
            "scripted:planner",
            "Plan",
            plan,
            [{"field": "(root)", "problem": f"Value error, {problem}"}],
        ),
        2,
    )


async def test_planner_input_without_a_goal_is_bad_schema(runtime: Runtime) -> None:
    reply = await run(runtime, planner(), {"context": "x"}, ScriptedModel("planner"))

    assert outcome(reply) == (None, bad_schema("planner input: goal: Field required"), 0)


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ([step("a"), step("a")], r"step ids must be unique; repeated: \['a'\]"),
        ([step("a", "a")], "the dependencies form a cycle: a -> a"),
        ([step("a", agent="ghost")], r"agent 'ghost', which is not available"),
        ([step("a"), step("b"), step("c")], "at most 2 items"),
        ([], "at least 1 item"),
        ([{**step("a"), "description": "  "}], "must not be blank"),
    ],
    ids=["repeated-id", "self-dependency", "unavailable-agent", "too-many", "empty", "blank"],
)
def test_bounded_plan_refuses_a_plan_that_breaks_a_rule(
    steps: list[dict[str, Any]], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        bounded_plan(max_steps=2, agents=["search"]).model_validate({"steps": steps})


def test_bounded_plan_is_a_plan_with_its_limits_in_the_schema() -> None:
    plan_type = bounded_plan(max_steps=4)

    assert (issubclass(plan_type, Plan), plan_type.__name__) == (True, "Plan")
    assert plan_type.model_json_schema()["properties"]["steps"]["maxItems"] == 4


def test_find_cycle_follows_a_long_chain_without_recursion() -> None:
    chain = {str(i): [str(i + 1)] for i in range(5000)}
    chain["5000"] = ["0"]

    cycle = find_cycle(chain)

    assert (cycle[0], cycle[-1], len(cycle)) == ("0", "0", 5002)


def test_find_cycle_of_a_diamond_is_empty() -> None:
    assert find_cycle({"d": ["b", "c"], "b": ["a"], "c": ["a"], "a": []}) == []


# -- critic ------------------------------------------------------------------------------------


def critic(**settings: Any) -> CriticAgent:
    return CriticAgent(config=CriticConfig(model="scripted:critic", **settings))


def assessment(scores: dict[str, float], feedback: str = "Cite a source.") -> ScriptedReply:
    return ScriptedReply(
        output={
            "scores": [{"criterion": name, "score": value} for name, value in scores.items()],
            "feedback": feedback,
        }
    )


async def test_critic_scores_the_mean_of_the_criteria_and_passes(runtime: Runtime) -> None:
    model = ScriptedModel(
        "critic", replies=[assessment({"correctness": 1.0, "completeness": 0.75, "clarity": 0.5})]
    )

    reply = await run(
        runtime, critic(), {"task": "Why is the sky blue?", "answer": "Rayleigh"}, model
    )

    assert outcome(reply) == (
        {
            "score": 0.75,
            "feedback": "Cite a source.",
            "passed": True,
            "criteria": {"correctness": 1.0, "completeness": 0.75, "clarity": 0.5},
        },
        None,
        1,
    )


async def test_critic_prompt_has_the_task_answer_criteria_and_instructions(
    runtime: Runtime,
) -> None:
    model = ScriptedModel("critic", replies=[assessment({"correctness": 1.0, "clarity": 1.0})])
    agent = critic(criteria=["correctness", "clarity"], instructions="Be harsh.")

    reply = await run(runtime, agent, {"task": "Why is the sky blue?", "answer": "Air"}, model)

    assert outcome(reply) == (
        {
            "score": 1.0,
            "feedback": "Cite a source.",
            "passed": True,
            "criteria": {"correctness": 1.0, "clarity": 1.0},
        },
        None,
        1,
    )
    assert model.requests == [
        asked(
            "Task:\nWhy is the sky blue?\n\nAnswer:\nAir\n\nCriteria:\n- correctness\n- clarity",
            system="You are a strict reviewer. Score the answer against each criterion listed, "
            "from 0 (not met at all) to 1 (fully met), and say briefly what is wrong with it and "
            "how to improve it.\n\nBe harsh.",
            output_schema=Assessment.model_json_schema(),
            output_name="Assessment",
        )
    ]


async def test_critic_below_the_pass_threshold_does_not_pass(runtime: Runtime) -> None:
    model = ScriptedModel("critic", replies=[assessment({"Accuracy": 0.5}, "Too short.")])

    reply = await run(runtime, critic(criteria=["accuracy"], pass_threshold=0.6), "42", model)

    assert outcome(reply) == (
        {"score": 0.5, "feedback": "Too short.", "passed": False, "criteria": {"accuracy": 0.5}},
        None,
        1,
    )


async def test_critic_criteria_of_the_task_replace_the_configured_ones(runtime: Runtime) -> None:
    model = ScriptedModel("critic", replies=[assessment({"tone": 0.9, "brevity": 0.7}, "Fine.")])

    reply = await run(runtime, critic(), {"answer": "Hi!", "criteria": ["tone", "brevity"]}, model)

    assert outcome(reply) == (
        {
            "score": 0.8,
            "feedback": "Fine.",
            "passed": True,
            "criteria": {"tone": 0.9, "brevity": 0.7},
        },
        None,
        1,
    )


async def test_critic_missing_criterion_twice_is_invalid_output(runtime: Runtime) -> None:
    partial = assessment({"correctness": 1.0, "clarity": 0.5})
    model = ScriptedModel("critic", default=partial)

    reply = await run(runtime, critic(), "an answer", model)

    assert outcome(reply) == (
        None,
        invalid_output(
            "scripted:critic",
            "Assessment",
            partial.output,
            [{"field": "(root)", "problem": "Value error, no score for ['completeness']"}],
        ),
        2,
    )


async def test_critic_input_without_an_answer_is_bad_schema(runtime: Runtime) -> None:
    reply = await run(runtime, critic(), {"task": "x", "criteria": []}, ScriptedModel("critic"))

    assert outcome(reply) == (
        None,
        bad_schema(
            "critic input: answer: Field required; criteria: Tuple should have at least 1 item "
            "after validation, not 0"
        ),
        0,
    )


@pytest.mark.parametrize(
    ("criteria", "problem"),
    [
        (["Clarity", "clarity "], "criteria repeat (ignoring case and spaces): ['clarity']"),
        (["clarity", " "], "a criterion is blank"),
    ],
)
def test_critic_config_refuses_repeated_or_blank_criteria(
    criteria: list[str], problem: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        CriticConfig(criteria=criteria)


@pytest.mark.parametrize(
    ("scores", "problem"),
    [
        ({"tone": 1, "Tone": 1, "brevity": 1}, "more than one score for ['tone']"),
        ({"tone": 1, "brevity": 1, "style": 1}, "scores for criteria not asked about: ['style']"),
        ({"Brevity": 1}, "no score for ['tone']"),
    ],
)
def test_assessment_for_refuses_scores_that_do_not_match_the_criteria(
    scores: dict[str, float], problem: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        assessment_for(["tone", "brevity"]).model_validate(assessment(scores).output)


# -- aggregator --------------------------------------------------------------------------------


def aggregator(**settings: Any) -> AggregatorAgent:
    return AggregatorAgent(config=AggregatorConfig(model="scripted:judge", **settings))


def aggregate(
    answer: str | None,
    strategy: str,
    agreement: float | None,
    votes: dict[str, float],
    *,
    agreed: bool = True,
    reasoning: str | None = None,
) -> dict[str, Any]:
    """An aggregator's output, as it comes back."""
    return {
        "answer": answer,
        "strategy": strategy,
        "agreement": agreement,
        "agreed": agreed,
        "votes": votes,
        "reasoning": reasoning,
    }


CAPITALS = ["Paris.", "paris", {"answer": "Lyon", "confidence": 0.9, "weight": 5.0}]


async def test_aggregator_majority_needs_no_model(runtime: Runtime) -> None:
    reply = await run(runtime, aggregator(), {"answers": CAPITALS}, ScriptedModel("judge"))

    assert outcome(reply) == (
        aggregate("Paris.", "majority", 2 / 3, {"paris": 2, "lyon": 1}),
        None,
        0,
    )
    assert reply.usage == Usage()


async def test_aggregator_weighted_sums_the_weights(runtime: Runtime) -> None:
    reply = await run(runtime, aggregator(strategy="weighted"), CAPITALS, ScriptedModel("judge"))

    assert outcome(reply) == (
        aggregate("Lyon", "weighted", 5 / 7, {"paris": 2.0, "lyon": 5.0}),
        None,
        0,
    )


async def test_aggregator_confidence_sums_the_confidences(runtime: Runtime) -> None:
    answers = [
        {"answer": "yes", "confidence": 0.4},
        {"answer": "yes", "confidence": 0.4},
        {"answer": "no", "confidence": 0.9},
    ]
    reply = await run(
        runtime, aggregator(), {"answers": answers, "strategy": "confidence"}, ScriptedModel("j")
    )

    assert outcome(reply) == (
        aggregate("no", "confidence", 0.9 / 1.7, {"yes": 0.8, "no": 0.9}),
        None,
        0,
    )


async def test_aggregator_unanimous_agreement_gives_the_answer(runtime: Runtime) -> None:
    answers = ["  The answer is 42!", "the answer   is 42", "The Answer is 42."]
    reply = await run(runtime, aggregator(strategy="unanimous"), answers, ScriptedModel("judge"))

    assert outcome(reply) == (
        aggregate("  The answer is 42!", "unanimous", 1.0, {"the answer is 42": 3}),
        None,
        0,
    )


async def test_aggregator_unanimous_disagreement_says_so(runtime: Runtime) -> None:
    answers = ["yes", "Yes!", "no"]
    reply = await run(runtime, aggregator(strategy="unanimous"), answers, ScriptedModel("judge"))

    assert outcome(reply) == (
        aggregate(None, "unanimous", 2 / 3, {"yes": 2, "no": 1}, agreed=False),
        None,
        0,
    )


async def test_aggregator_concatenate_joins_with_the_separator(runtime: Runtime) -> None:
    agent = aggregator(strategy="concatenate", separator=" | ")
    reply = await run(
        runtime, agent, ["a", {"answer": "b", "source": "x"}, "A"], ScriptedModel("j")
    )

    assert outcome(reply) == (
        aggregate("a | b | A", "concatenate", None, {"a": 2, "b": 1}),
        None,
        0,
    )


async def test_aggregator_best_takes_the_judge_pick(runtime: Runtime) -> None:
    pick = ScriptedReply(output={"index": 2, "reasoning": "It is the most precise."})
    model = ScriptedModel("judge", replies=[pick])
    answers = ["About 300,000 km/s", "299,792,458 m/s", "about 300,000 km/s"]

    reply = await run(
        runtime, aggregator(), {"answers": answers, "strategy": "best", "task": "c?"}, model
    )

    assert outcome(reply) == (
        aggregate(
            "299,792,458 m/s",
            "best",
            1 / 3,
            {"about 300,000 km/s": 2, "299,792,458 m/s": 1},
            reasoning="It is the most precise.",
        ),
        None,
        1,
    )
    assert model.requests[0] == asked(
        "Task:\nc?\n\nAnswer 1:\nAbout 300,000 km/s\n\nAnswer 2:\n299,792,458 m/s\n\n"
        "Answer 3:\nabout 300,000 km/s",
        system="Pick the best of the 3 numbered answers: give its number (1 to 3) and why it "
        "is the best.",
        output_schema=model.requests[0].output_schema,
        output_name="Pick",
    )


async def test_aggregator_best_judge_out_of_range_twice_is_invalid_output(
    runtime: Runtime,
) -> None:
    pick = {"index": 3, "reasoning": "the third"}
    model = ScriptedModel("judge", default=ScriptedReply(output=pick))

    reply = await run(runtime, aggregator(strategy="best"), ["a", "b"], model)

    assert outcome(reply) == (
        None,
        invalid_output(
            "scripted:judge",
            "Pick",
            pick,
            [{"field": "index", "problem": "Input should be less than or equal to 2"}],
        ),
        2,
    )


async def test_aggregator_summarise_asks_the_model_to_merge(runtime: Runtime) -> None:
    model = ScriptedModel("judge", replies=["Paris, France."])
    agent = aggregator(strategy="summarise", instructions="One line.")

    reply = await run(runtime, agent, ["Paris", "It is Paris, in France"], model)

    assert outcome(reply) == (
        aggregate("Paris, France.", "summarise", None, {"paris": 1, "it is paris, in france": 1}),
        None,
        1,
    )
    assert model.requests == [
        asked(
            "Answer 1:\nParis\n\nAnswer 2:\nIt is Paris, in France",
            system="Merge the numbered answers into one answer: keep what they agree on, "
            "resolve or note where they differ, and answer with the merged answer only."
            "\n\nOne line.",
        )
    ]


@pytest.mark.parametrize(
    ("input", "problem"),
    [
        ({"answers": []}, "answers: List should have at least 1 item after validation, not 0"),
        ([], "answers: List should have at least 1 item after validation, not 0"),
        (
            {"answers": ["a"], "strategy": "loudest"},
            "strategy: Input should be 'majority', 'unanimous', 'weighted', 'confidence', "
            "'best', 'summarise' or 'concatenate'",
        ),
        (
            {"answers": [{"answer": "a", "weight": -1}]},
            "answers.0.weight: Input should be greater than or equal to 0",
        ),
        ({"answers": [3]}, "answers.0: Input should be a valid dictionary or instance of Ballot"),
        ("text", "Input should be a valid dictionary or instance of AggregatorInput"),
    ],
    ids=["empty", "empty-list", "unknown-strategy", "negative-weight", "number", "text"],
)
async def test_aggregator_bad_input_is_bad_schema(
    runtime: Runtime, input: Any, problem: str
) -> None:
    reply = await run(runtime, aggregator(), input, ScriptedModel("judge"))

    assert outcome(reply) == (None, bad_schema(f"aggregator input: {problem}"), 0)


# -- voting, directly --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("  Paris. ", "paris"),
        ("The   Answer\nis 42!!", "the answer is 42"),
        ("«Oui»", "oui"),
        ("$5", "$5"),
        ("e.g. this", "e.g. this"),
        ("...", ""),
    ],
)
def test_normalise_folds_case_spaces_and_end_punctuation(text: str, normal: str) -> None:
    assert normalise(text) == normal


def test_majority_tie_goes_to_more_confidence() -> None:
    ballots = [
        Ballot(answer="a", confidence=0.2),
        Ballot(answer="b", confidence=0.9),
        Ballot(answer="a", confidence=0.3),
        Ballot(answer="b", confidence=0.1),
    ]

    assert majority(ballots) == Outcome(answer="b", agreement=0.5, votes={"a": 2, "b": 2})


def test_majority_tie_of_equal_confidence_goes_to_the_first_seen() -> None:
    ballots = [Ballot(answer="b"), Ballot(answer="a"), Ballot(answer="A"), Ballot(answer="B")]

    assert majority(ballots) == Outcome(answer="b", agreement=0.5, votes={"b": 2, "a": 2})


def test_weighted_with_all_weights_zero_has_no_agreement() -> None:
    ballots = [Ballot(answer="a", weight=0), Ballot(answer="b", weight=0)]

    assert weighted(ballots) == Outcome(answer="a", agreement=0.0, votes={"a": 0.0, "b": 0.0})


@pytest.mark.parametrize("method", [majority, unanimous, weighted, by_confidence])
def test_voting_without_ballots_is_a_value_error(method: Any) -> None:
    with pytest.raises(ValueError, match="no ballots to count"):
        method([])


def test_ballot_from_text_counts_fully() -> None:
    assert Ballot.model_validate("x") == Ballot(answer="x", confidence=1.0, weight=1.0)


ballots_strategy = st.lists(
    st.builds(
        Ballot,
        answer=st.sampled_from(["yes", "Yes!", "no", " NO ", "maybe", "..."]),
        confidence=st.floats(0, 1),
        weight=st.floats(0, 1e9),
    ),
    min_size=1,
    max_size=12,
)
methods = st.sampled_from(["majority", "unanimous", "weighted", "confidence"])


@given(ballots=ballots_strategy, method=methods)
def test_agreement_is_a_share_between_zero_and_one(ballots: list[Ballot], method: Any) -> None:
    assert 0.0 <= vote(ballots, method=method).agreement <= 1.0


@given(ballots=ballots_strategy, method=methods)
def test_the_winner_has_the_largest_tally(ballots: list[Ballot], method: Any) -> None:
    result = vote(ballots, method=method)

    if result.answer is not None:
        assert result.votes[normalise(result.answer)] == max(result.votes.values())
        assert result.answer in [ballot.answer for ballot in ballots]


@given(ballots=ballots_strategy, method=methods)
def test_votes_cover_every_answer_once_normalised(ballots: list[Ballot], method: Any) -> None:
    result = vote(ballots, method=method)

    assert list(result.votes) == list(dict.fromkeys(normalise(b.answer) for b in ballots))


@given(ballots=ballots_strategy)
def test_unanimous_agrees_exactly_when_one_answer_is_given(ballots: list[Ballot]) -> None:
    assert unanimous(ballots).agreed == (len(tally(ballots)) == 1)


# -- configuration -----------------------------------------------------------------------------


def test_every_agent_is_configured_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(
        "agents:\n"
        "  translate:\n    kind: agents.llm:LLMAgent\n    model: scripted:w\n"
        "    prompt: 'To French: {input}'\n    temperature: 0\n"
        "  triage:\n    kind: agents.classifier:ClassifierAgent\n    categories: [Bug, Question]\n"
        "    default: question\n    threshold: 0.7\n"
        "  plan:\n    kind: agents.planner:PlannerAgent\n    max_steps: 5\n    agents: [search]\n"
        "  review:\n    kind: agents.critic:CriticAgent\n    criteria: [accuracy]\n"
        "    pass_threshold: 0.8\n"
        "  merge:\n    kind: agents.aggregator:AggregatorAgent\n    strategy: weighted\n"
    )
    config = load_config(path, environ={})

    assert {name: config.build_agent(name).config for name in config.agents} == {
        "translate": LLMAgentConfig(model="scripted:w", prompt="To French: {input}", temperature=0),
        "triage": ClassifierConfig(
            categories=["bug", "question"], default="question", threshold=0.7
        ),
        "plan": PlannerConfig(max_steps=5, agents=["search"]),
        "review": CriticConfig(criteria=["accuracy"], pass_threshold=0.8),
        "merge": AggregatorConfig(strategy="weighted"),
    }


def test_classifier_default_outside_its_categories_fails_the_config(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(
        "agents:\n  triage:\n    kind: agents.classifier:ClassifierAgent\n"
        "    categories: [bug, question]\n    default: praise\n"
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})

    assert caught.value.problems == [
        ConfigProblem(
            str(path),
            2,
            "agents.triage",
            "default 'praise' is not one of the categories ['bug', 'question']",
        )
    ]
