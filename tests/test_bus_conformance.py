"""The bus contract: every test runs on `InMemoryBus` and on `NatsBus` against a real server.

Delivery is asynchronous, so a test knows "everything published so far was handled" only
through the bus itself: it publishes a final marker (``END``) that the same subscription
receives, which per-publisher ordering makes sound, or it drains the subscription. Where the
buses once differed (header normalisation, size checks with headers, a drain racing the
client's buffer), a test pins the behaviour of the real server.
"""

from __future__ import annotations

import anyio
import pytest

from mesh.bus import DEFAULT_MAX_PAYLOAD, Bus, BusClosedError, Message, Subscription
from mesh.errors import MeshTimeoutError, NoRespondersError, PayloadTooLargeError

pytestmark = pytest.mark.anyio

WAIT = 5.0
"""Upper bound, in seconds, on any wait in this module; loopback answers in milliseconds."""

END = b"--end--"
"""Payload of the marker that closes a burst: handled last, so everything before it is too."""


class Recorder:
    """A handler that keeps what it receives and signals the end marker or a count."""

    def __init__(self, expected: int = 0) -> None:
        self.messages: list[Message] = []
        self.ended = anyio.Event()
        self.reached = anyio.Event()
        self._expected = expected

    async def __call__(self, message: Message) -> None:
        if message.data == END:
            self.ended.set()
            return
        self.messages.append(message)
        if self._expected and len(self.messages) >= self._expected:
            self.reached.set()

    @property
    def subjects(self) -> list[str]:
        return [message.subject for message in self.messages]

    @property
    def payloads(self) -> list[bytes]:
        return [message.data for message in self.messages]


def numbered(count: int) -> list[bytes]:
    return [b"%d" % index for index in range(count)]


async def publish_all(bus: Bus, subject: str, payloads: list[bytes]) -> None:
    for payload in payloads:
        await bus.publish(subject, payload)


async def publish_subjects(bus: Bus, subjects: list[str], *, end: str) -> None:
    """Publish one message to each subject, then the end marker to ``end``."""
    for subject in subjects:
        await bus.publish(subject, subject.encode())
    await bus.publish(end, END)


async def wait_ended(*recorders: Recorder) -> None:
    with anyio.fail_after(WAIT):
        for recorder in recorders:
            await recorder.ended.wait()


async def wait_reached(*recorders: Recorder) -> None:
    with anyio.fail_after(WAIT):
        for recorder in recorders:
            await recorder.reached.wait()


async def settle(bus: Bus, *subscriptions: Subscription) -> None:
    """Wait until each subscription has handled everything published so far, and stop it.

    For queue members, which no common marker reaches. The flush comes first because nats-py
    writes a drain's PING ahead of publishes still in its buffer (see the drain test below).
    """
    with anyio.fail_after(WAIT):
        await bus.flush()
        for subscription in subscriptions:
            await subscription.drain()


async def _ignore(message: Message) -> None:
    """A handler for subscriptions whose messages do not matter."""


# -- the basics --------------------------------------------------------------------------------


async def test_max_payload_is_the_server_default(bus: Bus) -> None:
    assert bus.max_payload == DEFAULT_MAX_PAYLOAD


async def test_subscription_reports_its_subject_and_queue(bus: Bus) -> None:
    plain = await bus.subscribe("info.*", _ignore)
    grouped = await bus.subscribe("info.>", _ignore, queue="workers")
    assert (plain.subject, plain.queue, grouped.subject, grouped.queue) == (
        "info.*",
        None,
        "info.>",
        "workers",
    )


async def test_new_inbox_is_unique_and_receives_messages(bus: Bus) -> None:
    inboxes = {bus.new_inbox() for _ in range(100)}
    assert len(inboxes) == 100
    inbox = inboxes.pop()
    got = Recorder()
    await bus.subscribe(inbox, got)
    await bus.publish(inbox, b"hello")
    await bus.publish(inbox, END)
    await wait_ended(got)
    assert got.messages == [Message(inbox, b"hello")]


async def test_publish_with_reply_subject_hands_it_to_subscribers(bus: Bus) -> None:
    got = Recorder()
    await bus.subscribe("with.reply", got)
    await bus.publish("with.reply", b"question", reply="answers.here")
    await bus.publish("with.reply", END)
    await wait_ended(got)
    assert got.messages == [Message("with.reply", b"question", "answers.here")]


# -- wildcards and literal subjects ------------------------------------------------------------


async def test_literal_subject_matches_only_itself(bus: Bus) -> None:
    got = Recorder()
    await bus.subscribe("lit.foo.bar", got)
    await publish_subjects(
        bus,
        ["lit.foo.bar", "lit.foo", "lit.foo.bar.baz", "lit.foo.baz", "lit.Foo.bar", "lit.foo.bar"],
        end="lit.foo.bar",
    )
    await wait_ended(got)
    assert got.subjects == ["lit.foo.bar", "lit.foo.bar"]


async def test_star_matches_exactly_one_token(bus: Bus) -> None:
    got = Recorder()
    await bus.subscribe("star.*", got)
    await publish_subjects(bus, ["star.a", "star.bcd", "star.*"], end="star.end")
    await wait_ended(got)
    assert got.subjects == ["star.a", "star.bcd", "star.*"]


async def test_star_does_not_match_zero_or_two_tokens(bus: Bus) -> None:
    got = Recorder()
    await bus.subscribe("star.*", got)
    await publish_subjects(bus, ["star", "star.a.b", "other.a"], end="star.end")
    await wait_ended(got)
    assert got.subjects == []


async def test_star_in_the_middle_matches_one_token(bus: Bus) -> None:
    got = Recorder()
    await bus.subscribe("mid.*.end", got)
    await publish_subjects(
        bus, ["mid.a.end", "mid.end", "mid.a.b.end", "mid.a.endx", "mid.b.end"], end="mid.x.end"
    )
    await wait_ended(got)
    assert got.subjects == ["mid.a.end", "mid.b.end"]


async def test_full_wildcard_matches_one_or_more_trailing_tokens(bus: Bus) -> None:
    got = Recorder()
    await bus.subscribe("fwc.>", got)
    await publish_subjects(bus, ["fwc.a", "fwc.a.b", "fwc.a.b.c.d"], end="fwc.end")
    await wait_ended(got)
    assert got.subjects == ["fwc.a", "fwc.a.b", "fwc.a.b.c.d"]


async def test_full_wildcard_does_not_match_zero_tokens(bus: Bus) -> None:
    got = Recorder()
    await bus.subscribe("fwc.>", got)
    await publish_subjects(bus, ["fwc", "fwcx.a", "other.fwc.a"], end="fwc.end")
    await wait_ended(got)
    assert got.subjects == []


async def test_full_wildcard_alone_matches_every_subject(bus: Bus) -> None:
    got = Recorder()
    await bus.subscribe(">", got)
    await publish_subjects(bus, ["a", "a.b", "x.y.z.w", "_INBOX.abc"], end="end")
    await wait_ended(got)
    assert got.subjects == ["a", "a.b", "x.y.z.w", "_INBOX.abc"]


async def test_star_and_full_wildcard_combine(bus: Bus) -> None:
    got = Recorder()
    await bus.subscribe("*.mix.>", got)
    await publish_subjects(
        bus,
        ["a.mix.b", "a.mix", "a.mix.b.c", "mix.b", "a.b.mix.c", "z.mix.q"],
        end="end.mix.end",
    )
    await wait_ended(got)
    assert got.subjects == ["a.mix.b", "a.mix.b.c", "z.mix.q"]


async def test_every_matching_subscription_gets_a_copy(bus: Bus) -> None:
    patterns = ["copy.a.b", "copy.*.b", "copy.a.*", "copy.>", "*.a.b", ">", "*.*.*"]
    recorders = {pattern: Recorder() for pattern in patterns}
    for pattern, recorder in recorders.items():
        await bus.subscribe(pattern, recorder)
    await publish_subjects(bus, ["copy.a.b"], end="copy.a.b")
    await wait_ended(*recorders.values())
    assert {pattern: r.subjects for pattern, r in recorders.items()} == {
        pattern: ["copy.a.b"] for pattern in patterns
    }


async def test_two_subscriptions_to_one_subject_each_get_a_copy(bus: Bus) -> None:
    first, second = Recorder(), Recorder()
    await bus.subscribe("twin", first)
    await bus.subscribe("twin", second)
    await publish_all(bus, "twin", [b"1", b"2"])
    await bus.publish("twin", END)
    await wait_ended(first, second)
    assert (first.payloads, second.payloads) == ([b"1", b"2"], [b"1", b"2"])


async def test_published_wildcard_characters_are_literal_tokens(bus: Bus) -> None:
    # The server does not expand a published '*' or '>': they are plain tokens, matched by
    # subscription wildcards but never by a literal subscription.
    recorders = {pattern: Recorder() for pattern in ["pw.*", "pw.>", "pw.x", "*.x"]}
    for pattern, recorder in recorders.items():
        await bus.subscribe(pattern, recorder)
    await publish_subjects(bus, ["pw.*", "pw.>", "pw.*.x"], end="pw.x")
    await wait_ended(*recorders.values())
    assert {pattern: r.subjects for pattern, r in recorders.items()} == {
        "pw.*": ["pw.*", "pw.>"],
        "pw.>": ["pw.*", "pw.>", "pw.*.x"],
        "pw.x": [],
        "*.x": [],
    }


async def test_publish_to_subject_with_empty_token_reaches_no_one(bus: Bus) -> None:
    # nats-server matches a subject with an empty token against nothing, wildcards included.
    recorders = {pattern: Recorder() for pattern in ["e.*.x", "e.>", ">"]}
    for pattern, recorder in recorders.items():
        await bus.subscribe(pattern, recorder)
    await publish_subjects(bus, ["e..x", "e.", ".e"], end="e.end.x")
    await wait_ended(*recorders.values())
    assert {pattern: r.subjects for pattern, r in recorders.items()} == {
        pattern: [] for pattern in recorders
    }


# -- malformed subjects and queue names -------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "foo..bar",
        ".foo",
        "foo.",
        "foo.>.bar",
        ">.foo",
        "foo*",
        "foo.*bar",
        "foo.b>",
        "foo bar",
        "foo\tbar",
        "foo\r\nbar",
        " foo",
    ],
)
async def test_subscribe_rejects_malformed_subject(bus: Bus, subject: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        await bus.subscribe(subject, _ignore)


@pytest.mark.parametrize("queue", ["", "my group", "group\t", "\n"])
async def test_subscribe_rejects_malformed_queue(bus: Bus, queue: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        await bus.subscribe("q.valid", _ignore, queue=queue)


@pytest.mark.parametrize("subject", ["", " ", "foo bar", "foo\tbar", "foo\r\nPING", "foo\n"])
async def test_publish_rejects_malformed_subject(bus: Bus, subject: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        await bus.publish(subject, b"")


async def test_publish_rejects_malformed_reply_subject(bus: Bus) -> None:
    with pytest.raises(ValueError, match="invalid"):
        await bus.publish("reply.check", b"", reply="bad reply")


@pytest.mark.parametrize("subject", ["", "foo bar"])
async def test_request_rejects_malformed_subject(bus: Bus, subject: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        await bus.request(subject, b"", timeout=WAIT)


# -- queue groups ------------------------------------------------------------------------------


async def test_queue_group_delivers_each_message_to_exactly_one_member(bus: Bus) -> None:
    members = [Recorder() for _ in range(3)]
    subscriptions = [await bus.subscribe("work", m, queue="workers") for m in members]
    await publish_all(bus, "work", numbered(200))
    await settle(bus, *subscriptions)
    delivered = [payload for member in members for payload in member.payloads]
    assert sorted(delivered) == sorted(numbered(200))


@pytest.mark.parametrize("size", [2, 3])
async def test_queue_group_shares_load_between_members(bus: Bus, size: int) -> None:
    members = [Recorder() for _ in range(size)]
    subscriptions = [await bus.subscribe("share", m, queue="workers") for m in members]
    await publish_all(bus, "share", numbered(300))
    await settle(bus, *subscriptions)
    counts = [len(member.messages) for member in members]
    assert sum(counts) == 300
    assert min(counts) >= 45, counts  # 15 %: a fair split gives 100 or 150 each


async def test_plain_subscriber_and_queue_group_both_receive(bus: Bus) -> None:
    plain = Recorder()
    members = [Recorder() for _ in range(2)]
    subscriptions = [await bus.subscribe("mixed", plain)]
    subscriptions += [await bus.subscribe("mixed", m, queue="workers") for m in members]
    await publish_all(bus, "mixed", numbered(100))
    await settle(bus, *subscriptions)
    delivered = [payload for member in members for payload in member.payloads]
    assert (plain.payloads, sorted(delivered)) == (numbered(100), sorted(numbered(100)))


async def test_each_queue_group_receives_every_message_once(bus: Bus) -> None:
    groups = {name: [Recorder(), Recorder()] for name in ("billing", "audit")}
    subscriptions = [
        await bus.subscribe("orders", member, queue=name)
        for name, members in groups.items()
        for member in members
    ]
    await publish_all(bus, "orders", numbered(100))
    await settle(bus, *subscriptions)
    received = {
        name: sorted(payload for member in members for payload in member.payloads)
        for name, members in groups.items()
    }
    assert received == {name: sorted(numbered(100)) for name in groups}


async def test_queue_group_with_wildcard_subject_delivers_once(bus: Bus) -> None:
    members = [Recorder() for _ in range(2)]
    subscriptions = [await bus.subscribe("jobs.*", m, queue="workers") for m in members]
    for index in range(50):
        await bus.publish(f"jobs.{index}", b"%d" % index)
    await settle(bus, *subscriptions)
    delivered = [payload for member in members for payload in member.payloads]
    assert sorted(delivered) == sorted(numbered(50))


# -- request / reply ---------------------------------------------------------------------------


async def test_request_returns_the_reply(bus: Bus) -> None:
    requests: list[Message] = []

    async def upper(message: Message) -> None:
        requests.append(message)
        await bus.publish(message.reply, message.data.upper())

    await bus.subscribe("svc.upper", upper)
    with anyio.fail_after(WAIT):
        reply = await bus.request("svc.upper", b"hello", timeout=WAIT)
    inbox = requests[0].reply
    assert inbox
    assert requests == [Message("svc.upper", b"hello", inbox)]
    assert reply == Message(inbox, b"HELLO")


async def test_request_and_reply_carry_headers(bus: Bus) -> None:
    requests: list[Message] = []

    async def respond(message: Message) -> None:
        requests.append(message)
        trace = (message.headers or {}).get("Trace-Id", "")
        await bus.publish(message.reply, b"pong", headers={"Trace-Id": trace, "Status": "ok"})

    await bus.subscribe("svc.headers", respond)
    with anyio.fail_after(WAIT):
        reply = await bus.request(
            "svc.headers", b"ping", timeout=WAIT, headers={"Trace-Id": "t-42"}
        )
    inbox = requests[0].reply
    assert requests == [Message("svc.headers", b"ping", inbox, {"Trace-Id": "t-42"})]
    assert reply == Message(inbox, b"pong", "", {"Trace-Id": "t-42", "Status": "ok"})


async def test_concurrent_requests_each_get_their_own_reply(bus: Bus) -> None:
    count = 50
    waiting: list[Message] = []

    async def answer_all_at_once_in_reverse(message: Message) -> None:
        # Holding every answer until all requests are in flight, then answering out of order,
        # shows that each reply is matched to its request and not to the oldest one.
        waiting.append(message)
        if len(waiting) == count:
            for pending in reversed(waiting):
                await bus.publish(pending.reply, b"re:" + pending.data)

    await bus.subscribe("svc.many", answer_all_at_once_in_reverse)
    replies: dict[int, bytes] = {}

    async def ask(index: int) -> None:
        reply = await bus.request("svc.many", b"%d" % index, timeout=WAIT)
        replies[index] = reply.data

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            for index in range(count):
                group.start_soon(ask, index)
    assert replies == {index: b"re:%d" % index for index in range(count)}


async def test_queue_group_member_answers_request(bus: Bus) -> None:
    async def respond(message: Message) -> None:
        await bus.publish(message.reply, b"done:" + message.data)

    for _ in range(3):
        await bus.subscribe("svc.pool", respond, queue="pool")
    with anyio.fail_after(WAIT):
        reply = await bus.request("svc.pool", b"job", timeout=WAIT)
    assert reply.data == b"done:job"


# -- timeouts and no responders ----------------------------------------------------------------


async def test_request_without_an_answer_raises_mesh_timeout_error(bus: Bus) -> None:
    silent = Recorder()
    await bus.subscribe("svc.silent", silent)
    started = anyio.current_time()
    with anyio.fail_after(WAIT), pytest.raises(MeshTimeoutError):
        await bus.request("svc.silent", b"anyone?", timeout=0.3)
    assert anyio.current_time() - started >= 0.25
    assert silent.payloads == [b"anyone?"]


async def test_request_timeout_is_a_builtin_timeout_error(bus: Bus) -> None:
    await bus.subscribe("svc.silent", Recorder())
    with anyio.fail_after(WAIT), pytest.raises(TimeoutError):
        await bus.request("svc.silent", b"anyone?", timeout=0.1)


async def test_request_without_responders_raises_no_responders_error(bus: Bus) -> None:
    with anyio.fail_after(WAIT), pytest.raises(NoRespondersError):
        await bus.request("svc.ghost", b"{}", timeout=WAIT)


async def test_request_after_responder_unsubscribes_raises_no_responders_error(bus: Bus) -> None:
    async def echo(message: Message) -> None:
        await bus.publish(message.reply, message.data)

    subscription = await bus.subscribe("svc.leaving", echo)
    with anyio.fail_after(WAIT):
        assert (await bus.request("svc.leaving", b"hi", timeout=WAIT)).data == b"hi"
    await subscription.unsubscribe()
    with anyio.fail_after(WAIT), pytest.raises(NoRespondersError):
        await bus.request("svc.leaving", b"hi", timeout=WAIT)


# -- headers -----------------------------------------------------------------------------------


async def test_published_headers_arrive_intact(bus: Bus) -> None:
    headers = {
        "Trace-Id": "abc-123",
        "content-type": "application/json; charset=utf-8",
        "X-Case": "upper",
        "x-case": "lower",
        "X-Unicode": "grüße €",
        "X-Empty": "",
    }
    got = Recorder()
    await bus.subscribe("hdr.intact", got)
    await bus.publish("hdr.intact", b"body", headers=headers)
    await bus.publish("hdr.intact", END)
    await wait_ended(got)
    assert got.messages == [Message("hdr.intact", b"body", "", headers)]


async def test_message_without_headers_has_none(bus: Bus) -> None:
    got = Recorder()
    await bus.subscribe("hdr.none", got)
    await bus.publish("hdr.none", b"body")
    await bus.publish("hdr.none", END)
    await wait_ended(got)
    assert got.messages == [Message("hdr.none", b"body", "", None)]


async def test_empty_headers_arrive_as_none(bus: Bus) -> None:
    got = Recorder()
    await bus.subscribe("hdr.empty", got)
    await bus.publish("hdr.empty", b"body", headers={})
    await bus.publish("hdr.empty", END)
    await wait_ended(got)
    assert got.messages == [Message("hdr.empty", b"body", "", None)]


@pytest.mark.parametrize(
    ("sent", "received"),
    [("  padded  ", "padded"), ("\tv", "v"), ("one\r\ntwo", "one  two")],
    ids=["spaces", "tab", "crlf"],
)
async def test_header_value_arrives_as_the_wire_carries_it(
    bus: Bus, sent: str, received: str
) -> None:
    got = Recorder()
    await bus.subscribe("hdr.wire", got)
    await bus.publish("hdr.wire", b"", headers={"X-Value": sent})
    await bus.publish("hdr.wire", END)
    await wait_ended(got)
    assert got.messages == [Message("hdr.wire", b"", "", {"X-Value": received})]


async def test_publish_rejects_header_name_that_is_not_a_token(bus: Bus) -> None:
    with pytest.raises(ValueError, match="header"):
        await bus.publish("hdr.bad", b"", headers={"bad name": "v"})


# -- ordering, handler behaviour ---------------------------------------------------------------


async def test_messages_from_one_publisher_arrive_in_order(bus: Bus) -> None:
    plain, wildcard = Recorder(expected=500), Recorder(expected=500)
    await bus.subscribe("ord.stream", plain)
    await bus.subscribe("ord.*", wildcard)
    await publish_all(bus, "ord.stream", numbered(500))
    await wait_reached(plain, wildcard)
    assert (plain.payloads, wildcard.payloads) == (numbered(500), numbered(500))


async def test_failing_handler_keeps_receiving(bus: Bus) -> None:
    got = Recorder()

    async def fail_first(message: Message) -> None:
        await got(message)
        if message.data == b"boom":
            raise RuntimeError("handler failed")

    await bus.subscribe("fail.once", fail_first)
    await publish_all(bus, "fail.once", [b"boom", b"1", b"boom", b"2"])
    await bus.publish("fail.once", END)
    await wait_ended(got)
    assert got.payloads == [b"boom", b"1", b"boom", b"2"]


async def test_handler_runs_one_message_at_a_time(bus: Bus) -> None:
    running = 0
    most = 0
    seen: list[bytes] = []
    done = anyio.Event()

    async def busy(message: Message) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()  # room for an overlapping call, were there one
        seen.append(message.data)
        running -= 1
        if len(seen) == 50:
            done.set()

    await bus.subscribe("serial", busy)
    await publish_all(bus, "serial", numbered(50))
    with anyio.fail_after(WAIT):
        await done.wait()
    assert (most, seen) == (1, numbered(50))


# -- unsubscribe and drain ---------------------------------------------------------------------


async def test_no_delivery_after_unsubscribe(bus: Bus) -> None:
    leaving = Recorder()
    subscription = await bus.subscribe("unsub", leaving)
    await bus.publish("unsub", b"before")
    await bus.publish("unsub", END)
    await wait_ended(leaving)
    await subscription.unsubscribe()
    witness = Recorder()
    await bus.subscribe("unsub", witness)
    await publish_all(bus, "unsub", [b"after-1", b"after-2"])
    await bus.publish("unsub", END)
    await wait_ended(witness)
    assert (leaving.payloads, witness.payloads) == ([b"before"], [b"after-1", b"after-2"])


async def test_subscription_drain_lets_handler_finish_pending_messages(bus: Bus) -> None:
    first, release = anyio.Event(), anyio.Event()
    handled: list[bytes] = []

    async def held(message: Message) -> None:
        first.set()
        await release.wait()
        handled.append(message.data)

    subscription = await bus.subscribe("sdrain", held)
    await publish_all(bus, "sdrain", numbered(20))
    with anyio.fail_after(WAIT):
        await first.wait()  # the handler holds message 0; the others wait behind it
        async with anyio.create_task_group() as group:
            group.start_soon(subscription.drain)
            release.set()
    assert handled == numbered(20)


async def test_no_delivery_after_subscription_drain(bus: Bus) -> None:
    drained, witness = Recorder(), Recorder()
    subscription = await bus.subscribe("sdrain.after", drained)
    await bus.subscribe("sdrain.after", witness)
    await settle(bus, subscription)
    await bus.publish("sdrain.after", b"late")
    await bus.publish("sdrain.after", END)
    await wait_ended(witness)
    assert (drained.payloads, witness.payloads) == ([], [b"late"])


async def test_subscription_drain_handles_messages_published_just_before(bus: Bus) -> None:
    # The loss on NATS is a race between the PONG and the messages. Payloads of 32 KiB make
    # the messages trail the PONG nearly every time, and five rounds make a lucky pass rare.
    payload = bytes(32 * 1024)
    handled: list[int] = []
    for round_ in range(5):
        got = Recorder()
        subscription = await bus.subscribe(f"sdrain.race.{round_}", got)
        await publish_all(bus, f"sdrain.race.{round_}", [payload] * 20)
        with anyio.fail_after(WAIT):
            await subscription.drain()
        handled.append(len(got.messages))
    assert handled == [20] * 5


async def test_bus_drain_lets_handlers_finish_pending_messages(bus: Bus) -> None:
    first, release = anyio.Event(), anyio.Event()
    handled: list[bytes] = []

    async def held(message: Message) -> None:
        first.set()
        await release.wait()
        handled.append(message.data)

    await bus.subscribe("bdrain", held)
    await publish_all(bus, "bdrain", numbered(20))
    with anyio.fail_after(WAIT):
        await first.wait()
        async with anyio.create_task_group() as group:
            group.start_soon(bus.drain)
            release.set()
    assert handled == numbered(20)


async def test_bus_drain_handles_messages_published_just_before(bus: Bus) -> None:
    got = Recorder()
    await bus.subscribe("bdrain.race", got)
    await publish_all(bus, "bdrain.race", [bytes(32 * 1024)] * 20)
    with anyio.fail_after(WAIT):
        await bus.drain()
    assert len(got.messages) == 20


async def test_publish_after_bus_drain_raises_bus_closed_error(bus: Bus) -> None:
    with anyio.fail_after(WAIT):
        await bus.drain()
    with pytest.raises(BusClosedError):
        await bus.publish("closed", b"")


async def test_subscribe_after_bus_drain_raises_bus_closed_error(bus: Bus) -> None:
    with anyio.fail_after(WAIT):
        await bus.drain()
    with pytest.raises(BusClosedError):
        await bus.subscribe("closed", _ignore)


async def test_request_after_bus_drain_raises_bus_closed_error(bus: Bus) -> None:
    with anyio.fail_after(WAIT):
        await bus.drain()
    with pytest.raises(BusClosedError):
        await bus.request("closed", b"", timeout=WAIT)


# -- payload limit -----------------------------------------------------------------------------


async def test_publish_larger_than_max_payload_raises(bus: Bus) -> None:
    with pytest.raises(PayloadTooLargeError):
        await bus.publish("big", bytes(bus.max_payload + 1))


async def test_payload_of_exactly_max_payload_is_delivered(bus: Bus) -> None:
    got = Recorder()
    payload = b"x" * bus.max_payload
    await bus.subscribe("big.ok", got)
    await bus.publish("big.ok", payload)
    await bus.publish("big.ok", END)
    await wait_ended(got)
    assert got.messages == [Message("big.ok", payload)]


async def test_request_larger_than_max_payload_raises(bus: Bus) -> None:
    with pytest.raises(PayloadTooLargeError):
        await bus.request("big.request", bytes(bus.max_payload + 1), timeout=WAIT)


async def test_publish_whose_headers_push_it_past_max_payload_raises(bus: Bus) -> None:
    with pytest.raises(PayloadTooLargeError):
        await bus.publish("big.headers", bytes(bus.max_payload), headers={"X-Pad": "v"})
