"""The pieces of streaming that need no Temporal: the worker's live text, event ids, SSE."""

import asyncio

import pytest

from activities.stream_hub import LiveText, Reading, StreamHub, TooManyReaders
from api.errors import ApiError
from api.streaming import Cursor, resume_point
from cli.sse import iter_events
from common.live_streams import stream_identity, stream_url_of


async def test_readers_get_the_pieces_as_produced_whenever_they_join() -> None:
    live = LiveText()
    for piece in ("Hel", "lo, ", "world"):
        live.append(piece)
    assert [await live.read(0), await live.read(3), await live.read(7)] == ["Hel", "lo, ", "world"]
    waiting = asyncio.create_task(live.read(12))
    await asyncio.sleep(0.01)
    assert not waiting.done(), "a reader at the end waits for the next piece"
    live.finish("Hello, world!")
    assert await waiting == "!" and live.outcome == "completed"
    assert await live.read(13) == "", "past the end of a finished text: nothing, no wait"


async def test_a_final_text_that_differs_from_its_pieces_is_marked_replaced() -> None:
    live = LiveText()
    live.append("draft")
    live.finish("final")
    assert live.outcome == "replaced"
    failed = LiveText()
    failed.append("half")
    failed.fail()
    failed.append(" more")
    assert failed.outcome == "failed" and failed.text == "half"


def test_readers_per_text_are_bounded() -> None:
    live = LiveText()
    first, _ = Reading(live, 2), Reading(live, 2)
    with pytest.raises(TooManyReaders):
        Reading(live, 2)
    first.close()
    Reading(live, 2)


def test_the_hub_forgets_old_texts_beyond_its_bound() -> None:
    hub = StreamHub(max_texts=2)
    for turn in (1, 2, 3):
        hub.open(("wf", turn, 1, 1))
    assert hub.get(("wf", 1, 1, 1)) is None and hub.get(("wf", 3, 1, 1)) is not None


def test_event_ids_round_trip_and_order_within_a_turn() -> None:
    cursor = Cursor(turn=4, step=2, phase=1, attempt=3, offset=120)
    assert Cursor.decode(cursor.encode()) == cursor
    assert cursor.before(2, 2) and not cursor.before(2, 1) and not cursor.before(1, 5)
    for bad in ("", "1.2.3", "a.b.c.d.e.f", "0.0.0.0.0.0", "1.1.9.0.0.0", "1.1.1.1.-1.0"):
        with pytest.raises(ValueError):
            Cursor.decode(bad)
    with pytest.raises(ApiError) as refused:
        resume_point("1.2")
    assert refused.value.status == 400
    assert resume_point(None) is None


def test_the_worker_identity_names_its_stream_server() -> None:
    identity = stream_identity("http://10.0.0.7:7300")
    assert stream_url_of(identity) == "http://10.0.0.7:7300"
    assert stream_url_of("1234@host") is None
    assert stream_url_of("1@h stream=file:///etc/passwd") is None


def test_sse_events_parse_with_ids_and_comments() -> None:
    lines = [": keepalive", "", "id: 1.0.0.0.0.0", "event: turn_started", 'data: {"turn": 1}', ""]
    (event,) = iter_events(lines)
    assert (event.id, event.event, event.data) == ("1.0.0.0.0.0", "turn_started", {"turn": 1})
