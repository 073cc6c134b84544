"""InFlight: what one basic.ack, basic.nack or basic.return settles (pure bookkeeping)."""
from __future__ import annotations

from messaging.amqp.confirms import InFlight
from messaging.db.outbox import PendingMessage
from messaging.events import Message


def row(n: int) -> PendingMessage:
    return PendingMessage(100 + n, 0.0, Message("orders", "order.placed", b"{}", f"m{n}", f"o{n}",
                                                "OrderPlaced"))


def published(count: int) -> InFlight:
    inflight = InFlight()
    for n in range(1, count + 1):
        inflight.add(row(n))
    return inflight


def test_tags_count_from_one_in_publishing_order():
    inflight = InFlight()
    assert [inflight.add(row(n)) for n in range(1, 4)] == [1, 2, 3]
    assert len(inflight) == 3


def test_a_single_ack_confirms_only_its_tag():
    inflight = published(3)
    assert inflight.settle(2, multiple=False, acked=True) == ([102], [])
    assert len(inflight) == 2
    assert inflight.settle(2, multiple=False, acked=True) == ([], []), "settled once"


def test_a_multiple_ack_confirms_every_tag_up_to_it_in_tag_order():
    inflight = published(5)
    inflight.settle(2, multiple=False, acked=True)
    assert inflight.settle(4, multiple=True, acked=True) == ([101, 103, 104], [])
    assert len(inflight) == 1
    assert inflight.settle(5, multiple=True, acked=True) == ([105], [])


def test_a_nack_gives_rows_back():
    inflight = published(4)
    assert inflight.settle(1, multiple=False, acked=False) == ([], [101])
    assert inflight.settle(3, multiple=True, acked=False) == ([], [102, 103])
    assert len(inflight) == 1


def test_a_returned_message_is_given_back_although_it_is_acked():
    inflight = published(3)
    inflight.returned("m2")
    assert inflight.settle(3, multiple=True, acked=True) == ([101, 103], [102])


def test_a_return_is_forgotten_once_settled():
    inflight = published(1)
    inflight.returned("m1")
    inflight.settle(1, multiple=False, acked=True)
    inflight.add(row(1))  # published again, tag 2, routable this time
    assert inflight.settle(2, multiple=False, acked=True) == ([101], [])


def test_a_returned_and_nacked_message_is_given_back_once():
    inflight = published(1)
    inflight.returned("m1")
    assert inflight.settle(1, multiple=False, acked=False) == ([], [101])


def test_reset_forgets_rows_returns_and_tags():
    inflight = published(3)
    inflight.returned("m1")
    inflight.reset()
    assert len(inflight) == 0
    assert inflight.settle(3, multiple=True, acked=True) == ([], [])
    assert inflight.add(row(1)) == 1, "a new channel starts at tag 1"
    assert inflight.settle(1, multiple=False, acked=True) == ([101], []), "the old return is gone"
