"""Whose orders a caller may place, list and read. No I/O.

A signed-in caller orders as themselves: a body `user_id` that names someone else is refused
(NotYours: a 403). A student lists and reads only their own orders; asking for another user's list
is refused the same way, and another user's order is answered as if it did not exist (a 404), so
an order id reveals nothing. Staff, and everyone with AUTH=off (auth.EVERYONE), see every order.
"""
from __future__ import annotations

from typing import Any

from order_service.auth import Caller
from order_service.handlers import Order


class NotYours(PermissionError):
    """A signed-in caller named another user: a 403."""


def with_owner(payload: Any, caller: Caller) -> Any:
    """A POST /order body with the caller's subject as `user_id` when the body leaves it out."""
    if caller.subject is not None and isinstance(payload, dict) and "user_id" not in payload:
        return {**payload, "user_id": caller.subject}
    return payload


def check_owner(user_id: str, caller: Caller) -> None:
    """Refuse a validated order placed for someone other than the signed-in caller."""
    if caller.subject is not None and user_id != caller.subject:
        raise NotYours(f"user_id must be your own ({caller.subject}) or left out")


def visible_user(requested: str | None, caller: Caller) -> str | None:
    """Whose orders a list or board shows: staff choose (None: everyone's), a student sees their
    own; a student asking for someone else's is NotYours."""
    if caller.staff:
        return requested
    if requested is not None and requested != caller.subject:
        raise NotYours("you may list only your own orders")
    return caller.subject


def may_read(order: Order, caller: Caller) -> bool:
    """Whether the caller may see this order."""
    return caller.staff or order.user_id == caller.subject
