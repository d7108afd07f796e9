"""Slack's native AI surfaces: answers through chat.startStream/appendStream/stopStream, feedback buttons, and the
automatic fall back to edited messages; signed requests into the real bolt app, Slack's side the stand-in."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select

from modelbay.adapters.slack.blocks import SECTION_CHARS, answer_tail
from modelbay.adapters.slack.streaming import (
    APPEND_EVERY, RETRIES, STREAMED_CHARS, CallWindow, NativeAnswer, StreamLimits, StreamRefused,
)
from modelbay.bot import Reply
from modelbay.engine.db.schema.chat import Feedback
from modelbay.runtime import Runtime
from tests.support.answers import long_answer, untile
from tests.support.chat import served_by
from tests.support.openai_standin import Script, StandIn
from tests.support.slack import BOT_TOKEN, RESET, SignedRequests, SlackStandIn
from tests.scenarios.test_slack import USER, _in, _rated, _thread_as_shown, _unescaped, runtime, slack, standin  # noqa: F401


def _ask(slack: SignedRequests, standin: SlackStandIn, n: int, ts: str) -> str:
    """Open the n-th chat and ask in it; return its thread."""
    slack.command("chat tiny-chat", user=USER)
    thread = standin.wait("chat.update", lambda c: _in(c, "Chatting with"), count=n)[n - 1].args["ts"]
    slack.event({"type": "message", "channel": "C1", "user": USER, "text": "Write code.", "ts": ts,
                 "thread_ts": thread, "channel_type": "channel"})
    return thread


def _stopped(standin: SlackStandIn, thread: str, timeout: float = 120) -> list[dict]:
    """The thread's streamed messages once the last one stopped with the answer's tail blocks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = standin.streamed(thread)
        if shown and shown[-1]["state"] == "stopped" and shown[-1]["blocks"]:
            return shown
        time.sleep(0.05)
    raise AssertionError(f"no finished stream in {thread}: {standin.streamed(thread)}")


def test_long_answers_stream_natively_whole_in_order_escaped_and_paced(slack: SignedRequests, standin: SlackStandIn,
                                                                       runtime: Runtime) -> None:
    cuts_in_code = 0
    with StandIn() as model:
        served_by(runtime, "tiny-chat", model.endpoint)
        for n, (size, block) in enumerate([(3344, 0), (16164, 220), (25000, 400)], start=1):
            answer = long_answer(size, seed=size, long_block=block, fence_at=(10990, 21990))
            delay = 0.003 if n == 2 else 0.0002  # one answer written over seconds: appends are paced
            model.script = Script.in_pieces(answer, 7, delay)
            thread = _ask(slack, standin, n, f"4.{n}")
            messages = _stopped(standin, thread)
            for message in messages:  # Markdown as the model wrote it, escaped: no mention or link can come of it
                assert "<" not in message["text"]
                assert len(message["text"]) <= STREAMED_CHARS and message["state"] == "stopped"
            cuts_in_code += untile([_unescaped(m["text"]) for m in messages], answer)  # every character, once
            assert "**kwargs" in "".join(m["text"] for m in messages)  # Markdown, not rewritten as mrkdwn
            assert [bool(m["blocks"]) for m in messages] == [False] * (len(messages) - 1) + [True]
            assert len(messages) == (1 if size < STREAMED_CHARS else 2 if size < 2 * STREAMED_CHARS else 3)
            starts = [c for c in standin.to("chat.startStream") if c.args["thread_ts"] == thread]
            assert all(c.args["recipient_user_id"] == USER and c.args["recipient_team_id"] == "T1" for c in starts)
            # The "Thinking…" message gave way to the stream; nothing of the answer went through chat.update.
            thinking = [c for c in standin.to("chat.postMessage") if c.args.get("thread_ts") == thread]
            assert [c.args["_ts"] for c in thinking] == [c.args["ts"] for c in standin.to("chat.delete")][-1:]
            assert not any(c.args.get("ts") == thinking[0].args["_ts"] for c in standin.to("chat.update"))
    assert cuts_in_code >= 1  # a code block longer than a message was closed and reopened
    # Appends of one message come at most every APPEND_EVERY seconds, and never more than Tier 4 allows.
    appends: dict[str, list[float]] = {}
    for call in standin.to("chat.appendStream"):
        appends.setdefault(call.args["ts"], []).append(call.at)
    assert sum(len(times) for times in appends.values()) >= 6
    assert all(b - a >= APPEND_EVERY * 0.9 for times in appends.values() for a, b in zip(times, times[1:]))
    every = sorted(t for times in appends.values() for t in times)
    assert all(sum(1 for t in every if start <= t < start + 60) <= 100 for start in every)


def test_feedback_buttons_rate_the_answer_and_thumbs_down_asks_why(slack: SignedRequests, standin: SlackStandIn,
                                                                    runtime: Runtime) -> None:
    thread = _ask(slack, standin, 1, "5.1")
    [message] = _stopped(standin, thread)
    actions = next(b for b in message["blocks"] if b["type"] == "context_actions")
    [buttons] = actions["elements"]
    assert buttons["type"] == "feedback_buttons" and buttons["positive_button"]["text"]["text"] == "👍"
    assert _in(standin.to("chat.stopStream")[-1], "tokens")  # the footer under the answer
    message_id = int(buttons["positive_button"]["value"].rsplit(":", 1)[1])

    slack.feedback(message, positive=True, user=USER, thread_ts=thread)
    assert standin.wait("response_url", lambda c: _in(c, f"Rated answer #{message_id} 👍"))
    with runtime.db.session() as db:
        rating = db.scalars(select(Feedback)).one()
        assert (rating.message_id, rating.rating) == (message_id, 1)
    slack.feedback(message, positive=False, user=USER, thread_ts=thread)
    view = standin.wait("views.open")[0].args["view"]
    assert view["callback_id"] == "mb_rate"
    slack.submit(view, {"reason": {"reason": {"type": "static_select", "selected_option": {"value": "too_verbose"}}},
                        "comment": {"comment": {"type": "plain_text_input", "value": "shorter please"}}}, user=USER)
    standin.wait("chat.postEphemeral", lambda c: _in(c, "Changed your rating"))
    with runtime.db.session() as db:
        rating = db.scalars(select(Feedback)).one()  # the same row, changed
        assert (rating.message_id, rating.rating, rating.reason, rating.comment) == (message_id, -1, "too_verbose",
                                                                                    "shorter please")


def test_a_refused_stream_falls_back_to_edited_messages_and_is_remembered(
        slack: SignedRequests, standin: SlackStandIn, runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="modelbay.adapters.slack")
    standin.refuse_streaming = "unknown_method"  # a workspace without Slack's streaming methods
    with StandIn() as model:
        served_by(runtime, "tiny-chat", model.endpoint)
        for n in (1, 2):
            answer = long_answer(5244, seed=n, long_block=40)
            model.script = Script.in_pieces(answer, 9, 0.0002)
            thread = _ask(slack, standin, n, f"6.{n}")
            standin.wait("chat.update", _rated, count=n, timeout=120)
            messages = _thread_as_shown(standin, thread)
            sections = [b["text"]["text"] for m in messages for b in m.args["blocks"] if b["type"] == "section"]
            assert all(len(t) <= SECTION_CHARS and "<" not in t and ">" not in t for t in sections)
            untile([_unescaped(t) for t in sections], answer)  # everything arrived, once, in order
            assert not standin.streamed(thread)
    assert len(standin.to("chat.startStream")) == 1  # the refusal concerns the app: the second answer did not ask
    assert "falls back to chat.update: chat.startStream refused: unknown_method" in caplog.text
    assert "is shown with chat.update" in caplog.text


def test_a_stream_broken_midway_is_shown_again_whole_with_chat_update(slack: SignedRequests, standin: SlackStandIn,
                                                                      runtime: Runtime) -> None:
    answer = long_answer(8000, seed=7, long_block=30)
    with StandIn() as model:
        served_by(runtime, "tiny-chat", model.endpoint)
        model.script = Script.in_pieces(answer, 5, 0.001)
        standin.fail("chat.appendStream", 500, retry_after=None)  # Slack fails the first append
        thread = _ask(slack, standin, 1, "7.1")
        standin.wait("chat.update", _rated, timeout=120)
    [started] = standin.to("chat.startStream")
    assert started.args["_ts"] in standin.deleted and not standin.streamed(thread)  # the broken stream is gone
    messages = _thread_as_shown(standin, thread)
    shown = [m for m in messages if m.args.get("_ts", m.args.get("ts")) not in standin.deleted]
    sections = [b["text"]["text"] for m in shown for b in m.args["blocks"] if b["type"] == "section"]
    untile([_unescaped(t) for t in sections], answer)  # shown once, whole, on the chat.update path


def test_a_rate_limited_append_waits_and_loses_nothing(slack: SignedRequests, standin: SlackStandIn,
                                                       runtime: Runtime) -> None:
    answer = long_answer(4000, seed=11)
    with StandIn() as model:
        served_by(runtime, "tiny-chat", model.endpoint)
        model.script = Script.in_pieces(answer, 5, 0.001)
        standin.fail("chat.appendStream", 429, retry_after=2)
        thread = _ask(slack, standin, 1, "8.1")
        [message] = _stopped(standin, thread)
    assert _unescaped(message["text"]) == answer
    calls = standin.to("chat.appendStream")
    limited = next(c for c in calls if c.status == 429)
    assert next(c for c in calls if c.at > limited.at).at - limited.at >= 1.9  # Retry-After honoured


def test_the_standin_holds_slack_to_its_documented_limits(standin: SlackStandIn) -> None:
    client = WebClient(token=BOT_TOKEN, base_url=standin.api_url)

    def refused(call, **kwargs) -> str:  # noqa: ANN001
        with pytest.raises(SlackApiError) as caught:
            call(**kwargs)
        return caught.value.response["error"]

    assert refused(client.chat_postMessage, channel="C1", text="x",
                   blocks=[{"type": "markdown", "text": "a" * 12001}]) == "invalid_blocks"
    assert refused(client.chat_postMessage, channel="C1", text="x",
                   blocks=[{"type": "markdown", "text": "a" * 7000}] * 2) == "invalid_blocks"
    assert client.chat_postMessage(channel="C1", text="x", blocks=[{"type": "markdown", "text": "a" * 12000}])["ok"]
    assert refused(client.chat_startStream, channel="C1", thread_ts="1.0", markdown_text="hi") == "invalid_arguments"
    started = client.chat_startStream(channel="C1", thread_ts="1.0", markdown_text="hi", recipient_user_id="U1",
                                      recipient_team_id="T1")
    assert refused(client.chat_appendStream, channel="C1", ts=started["ts"],
                   markdown_text="a" * 12001) == "msg_too_long"
    client.chat_stopStream(channel="C1", ts=started["ts"])
    assert refused(client.chat_appendStream, channel="C1", ts=started["ts"],
                   markdown_text="more") == "message_not_in_streaming_state"
    standin.refuse_streaming = "not_allowed"
    assert refused(client.chat_startStream, channel="D1", thread_ts="1.0", markdown_text="hi") == "not_allowed"


def test_a_call_window_allows_no_more_calls_than_its_tier() -> None:
    async def run() -> list[float]:
        window, times = CallWindow(3, seconds=0.5), []
        for _ in range(7):
            await window.turn()
            times.append(time.monotonic())
        return times

    times = asyncio.run(run())
    assert all(sum(1 for t in times if start <= t < start + 0.5) <= 3 for start in times)
    assert times[-1] - times[0] >= 1.0  # seven calls at three per half second take at least two windows


def _streamed_alone(standin: SlackStandIn, pieces: list[str], thread: str) -> list[str]:
    """Stream pieces as one answer with NativeAnswer straight into the stand-in, each piece sent on its own (the
    pause outlasts APPEND_EVERY); return the thread's streamed messages as Slack holds them, unescaped."""
    async def run() -> None:
        client = AsyncWebClient(token=BOT_TOKEN, base_url=standin.api_url)
        answer = NativeAnswer(client, "C1", thread, user=USER, team="T1", limits=StreamLimits(), tail=answer_tail)
        for piece in pieces:
            await answer.add(piece)
            await asyncio.sleep(APPEND_EVERY * 1.3)
        await answer.finish(Reply(text="".join(pieces)))

    asyncio.run(run())
    shown = standin.streamed(thread)
    assert all(m["state"] == "stopped" for m in shown)
    return [_unescaped(m["text"]) for m in shown]


PROSE = "".join(f"Prose line {i} says a < b & c > d.\n" for i in range(400))  # two messages
CODE = "    x = a**2  # keep **kwargs\n" * 420  # ~13,000 characters of code: cut inside, reopened


@pytest.mark.parametrize("pieces, cuts_in_code", [
    (["intro\n```python\nx = 1\n``", "`\n", PROSE], 0),  # a closing fence line sent in two halves
    (["intro\n```python\nx = 1\n`", "``\n", PROSE], 0),
    (["intro\n```python\nx = 1\n```", "\n", PROSE], 0),  # its line break comes later
    (["intro\n`", "``python\n", CODE, "```\nend\n"], 1),  # an opening fence line sent in two halves
    (["intro\n``", "`python\n", CODE, "```\nend\n"], 1),
    (["intro\n```pyt", "hon\n", CODE, "```\nend\n"], 1),  # cut in its info string
    (["intro\n~~", "~~ python\n", CODE, "~~~~\n", "``", "`\nx = 1\n``", "`\nend\n"], 1),
])
def test_a_fence_line_sent_in_pieces_is_read_whole(standin: SlackStandIn, pieces: list[str],
                                                   cuts_in_code: int) -> None:
    answer = "".join(pieces)
    shown = _streamed_alone(standin, pieces, "9.1")
    assert len(shown) >= 2
    assert untile(shown, answer) == cuts_in_code  # byte for byte, a fence added only where a cut fell in code


def test_an_append_lost_in_transit_is_sent_again_once(standin: SlackStandIn) -> None:
    answer = long_answer(3344, seed=3)
    pieces = [answer[i:i + 700] for i in range(0, len(answer), 700)]
    # The second append's connection is reset, and again when slack_sdk's client tries it once more itself
    standin.fail("chat.appendStream", RESET, after=1, times=2)
    [shown] = _streamed_alone(standin, pieces, "9.2")
    assert shown == answer  # every character once: nothing Slack took is sent again, nothing lost
    assert [c.status for c in standin.to("chat.appendStream")][:4] == [200, RESET, RESET, 200]


def test_a_stream_lost_in_transit_for_good_is_refused_in_one_controlled_error(standin: SlackStandIn) -> None:
    standin.fail("chat.appendStream", RESET, times=2 * (RETRIES + 1))  # every try, and the client's own, reset
    with pytest.raises(StreamRefused) as refused:
        _streamed_alone(standin, ["Hello.\n", "More words.\n", "The end.\n"], "9.3")
    assert refused.value.method == "chat.appendStream" and "in transit" in refused.value.error
    assert refused.value.shown  # the adapter knows to remove what was streamed before it shows the answer again


def test_a_stop_lost_in_transit_keeps_the_whole_answer(slack: SignedRequests, standin: SlackStandIn,
                                                       runtime: Runtime) -> None:
    answer = long_answer(3344, seed=5, long_block=20)
    with StandIn() as model:
        served_by(runtime, "tiny-chat", model.endpoint)
        model.script = Script.in_pieces(answer, 9, 0.0005)
        standin.fail("chat.stopStream", RESET, times=2 * (RETRIES + 1))  # the final stop never gets through
        thread = _ask(slack, standin, 1, "9.4")
        standin.wait("chat.update", _rated, timeout=120)
    assert len(standin.to("chat.stopStream")) == 2 * (RETRIES + 1)  # tried again, with back-off, then given up
    [started] = standin.to("chat.startStream")
    assert started.args["_ts"] in standin.deleted and not standin.streamed(thread)
    messages = _thread_as_shown(standin, thread)
    shown = [m for m in messages if m.args.get("_ts", m.args.get("ts")) not in standin.deleted]
    sections = [b["text"]["text"] for m in shown for b in m.args["blocks"] if b["type"] == "section"]
    untile([_unescaped(t) for t in sections], answer)  # the whole answer, once, byte for byte, with chat.update


def test_streamed_markdown_escapes_what_could_mention_or_link_and_keeps_quotes(standin: SlackStandIn) -> None:
    answer = ("> A quote stays a quote, and a > b.\n\nNo <!channel>, <@U0123ABC>, <#C1|x>, <https://evil.example|"
              "click> or &lt;!here&gt; comes alive.\n\n```python\nif a < b and b > c & d:\n    pass\n```\n")
    _streamed_alone(standin, [answer], "9.5")
    [message] = standin.streamed("9.5")
    shown = message["text"]  # as Slack received it
    assert "<" not in shown  # no control sequence (mention, channel, link) can open
    assert shown.startswith("> A quote stays a quote, and a > b.\n")  # the block quote marker is left to Markdown
    assert "&amp;lt;!here&amp;gt;" in shown  # an escape of the model's own cannot turn into a <
    assert "if a &lt; b and b > c &amp; d:" in shown
    assert _unescaped(shown) == answer
