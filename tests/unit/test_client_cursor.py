"""The client's resume bookkeeping (`bloomr.client.cursor.Cursor`): what each
connection asks for, and which messages it delivers. Pure, no server."""

from __future__ import annotations

from bloomr.client.cursor import MAX_REPLAY, RECENT_IDS, Cursor


def test_a_live_only_subscription_learns_its_resume_point_quietly() -> None:
    cursor = Cursor()
    assert cursor.handshake() == {"replayLimit": "1"} and cursor.quiet
    assert cursor.mutes("replay_truncated") and not cursor.mutes("slow_consumer")
    assert cursor.accept("id-old", replayed=True) is False  # not delivered, but noted
    assert cursor.replay_ended() is True
    assert cursor.accept("id-1", replayed=False) is True
    assert cursor.handshake() == {"replay": "id-1"} and not cursor.quiet


def test_a_live_only_subscription_of_an_empty_channel_resumes_from_the_start() -> None:
    cursor = Cursor()
    cursor.handshake()
    cursor.replay_ended()
    assert cursor.handshake() == {"replayLimit": str(MAX_REPLAY)}


def test_a_replay_asked_for_is_asked_again_until_something_came() -> None:
    cursor = Cursor(replay="10 min", replay_limit=5)
    assert cursor.handshake() == {"replay": "10 min", "replayLimit": "5"}
    assert not cursor.quiet
    cursor.replay_ended()  # nothing matched
    assert cursor.handshake() == {"replay": "10 min", "replayLimit": "5"}
    assert cursor.accept("id-1", replayed=False)
    assert cursor.handshake() == {"replay": "id-1"}

    counted = Cursor(replay_limit=3)
    assert counted.handshake() == {"replayLimit": "3"}
    counted.replay_ended()  # the channel was empty
    assert counted.handshake() == {"replayLimit": str(MAX_REPLAY)}


def test_a_message_seen_before_is_dropped_and_old_ids_are_forgotten() -> None:
    cursor = Cursor(replay_limit=1)
    cursor.handshake()
    assert cursor.accept("a", replayed=True) is True
    assert cursor.accept("a", replayed=False) is False
    assert cursor.replay_ended() is True and cursor.replay_ended() is False
    for i in range(RECENT_IDS):
        cursor.remember(f"x{i}")
    assert cursor.remember("a") is True  # forgotten: the set stays bounded
    assert cursor.last_id == "a"
