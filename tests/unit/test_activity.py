"""Activity: a stream's message rate over the last minute and its last message."""

from __future__ import annotations

from bloomr.activity import WINDOW, Activity
from bloomr.model import Message


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def message(n: int, channel: str = "", data: bytes = b'"line"') -> Message:
    return Message(f"id-{n}", "s1", channel, 1_700_000_000_000 + n, n, data)


def test_unknown_stream_is_idle() -> None:
    assert Activity().snapshot("nope") == {"rate": 0.0, "last": None}


def test_rate_counts_the_last_minute_and_last_is_the_newest() -> None:
    clock = Clock()
    activity = Activity(clock)
    activity.record("s1", [message(1), message(2)])
    clock.now += 30
    activity.record("s1", [message(3, "errors", b'{"a":1}')])
    snap = activity.snapshot("s1")
    assert snap["rate"] == round(3 / WINDOW, 3)
    assert snap["last"] == {
        "id": "id-3",
        "channel": "errors",
        "timestamp": "2023-11-14T22:13:20.003Z",
        "preview": '{"a":1}',
    }
    clock.now += 31  # the first batch is now over a minute old
    assert activity.snapshot("s1")["rate"] == round(1 / WINDOW, 3)
    clock.now += 3600  # a slot reused an hour later counts afresh
    activity.record("s1", [message(4)])
    assert activity.snapshot("s1")["rate"] == round(1 / WINDOW, 3)


def test_preview_is_cut_and_streams_are_apart() -> None:
    activity = Activity(Clock())
    activity.record("s1", [message(1, data=b'"' + b"x" * 1000 + b'"')])
    activity.record("s2", [])
    assert len(activity.snapshot("s1")["last"]["preview"]) == 200
    assert activity.snapshot("s2")["last"] is None
    activity.forget("s1")
    assert activity.snapshot("s1")["last"] is None
