"""Check the system's invariants across the three services' stores: `python -m ops.audit`.

Run it when the system is idle. It prints each invariant with its figures and exits 1 if one is
broken (2 if a store cannot be read). Each store is a SQLite file, or a PostgreSQL database when
its URL is given (`--orders-url`, `--inventory-url`, `--notifications-url`).

NotificationService prunes its records past the deduplication window (DEDUP_RETENTION, or
`--retention`), so a reserved order decided before the window may have none: the notification
checks cover the orders decided within it.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass

from inventory_service.handlers import result_event_id
from inventory_service.store import InventoryStore
from messaging.db.messaging_store import Backend, open_database
from messaging.settings import ConfigError, StorageSettings, env_duration, retention_settings
from notification_service.store import NotificationStore
from order_service.store import OrderStore


@dataclass(frozen=True)
class Snapshot:
    """What the audit reads from the stores."""

    orders: dict[str, str]            # order_id -> status (OrderService)
    outcomes: dict[str, str]          # order_id -> reserved | failed (InventoryService)
    answered: dict[str, str]          # order_id -> event_id of the OrderPlaced event that its
    #                                   reservation decision answered (InventoryService)
    stock: list[dict]                 # item, initial, available, reserved
    notified: dict[str, str]          # order_id -> event_id of the InventoryReserved event that its
    #                                   notification was sent for (NotificationService)
    backlogs: dict[str, int]          # service -> outbox rows not yet deleted
    expired: frozenset[str] = frozenset()  # orders decided before the deduplication window: their
    #                                   notification records may have been pruned
    keyed: frozenset[str] = frozenset()  # orders named by an Idempotency-Key (OrderService)


@dataclass(frozen=True)
class Invariant:
    name: str
    ok: bool
    figures: str


def check(s: Snapshot) -> list[Invariant]:
    """Evaluate every invariant on a snapshot."""
    counts = Counter(s.orders.values())
    pending = counts.get("accepted", 0)
    reserved = {o for o, status in s.orders.items() if status == "reserved"}
    failed = {o for o, status in s.orders.items() if status == "failed"}
    without_outcome = set(s.orders) - set(s.outcomes)
    unknown_outcomes = set(s.outcomes) - set(s.orders)
    mismatched = {o for o in set(s.orders) & set(s.outcomes)
                  if s.orders[o] != "accepted" and s.orders[o] != s.outcomes[o]}
    wrong_stock = [row["item"] for row in s.stock
                   if row["available"] != row["initial"] - row["reserved"]]
    unnotified = reserved - set(s.notified) - s.expired
    wrongly_notified = set(s.notified) - reserved
    # A result's event_id is derived from the OrderPlaced event it answers, so a notification whose
    # result is not the one InventoryService's recorded decision produced answers another decision
    # for the same order: the order was decided twice.
    checked = [o for o in s.notified if o in s.answered]
    foreign = sorted(o for o in checked
                     if s.notified[o] != result_event_id(s.answered[o]) or s.outcomes.get(o) == "failed")
    undecided = len(s.notified) - len(checked)
    keyed_elsewhere = s.keyed - set(s.orders)
    return [
        Invariant("every accepted order has exactly one final status", pending == 0,
                  f"{len(s.orders)} orders: {counts.get('reserved', 0)} reserved, "
                  f"{len(failed)} failed, {pending} still accepted"),
        Invariant("every order has exactly one inventory outcome",
                  not without_outcome and not mismatched,
                  f"{len(s.outcomes)} outcomes, {len(without_outcome)} orders without one, "
                  f"{len(mismatched)} disagreeing with the order's status, "
                  f"{len(unknown_outcomes)} for orders placed outside OrderService"),
        Invariant("stock = initial - reserved quantities", not wrong_stock,
                  f"{len(s.stock)} items, {sum(r['reserved'] for r in s.stock)} units reserved, "
                  f"mismatched: {wrong_stock or 'none'}"),
        Invariant("exactly one notification per reserved order, none for failed ones",
                  not unnotified and not (wrongly_notified & failed),
                  f"{len(s.notified)} notified of {len(reserved)} reserved, "
                  f"{len(unnotified)} missing, {len(wrongly_notified & failed)} for failed orders, "
                  f"{len(reserved & s.expired)} decided before the deduplication window"),
        Invariant("every notification answers the reservation InventoryService decided for its order",
                  not foreign,
                  f"{len(checked)} checked, {len(foreign)} for another decision"
                  f"{': ' + ', '.join(foreign[:5]) if foreign else ''}, "
                  f"{undecided} for orders InventoryService has no decision for"),
        Invariant("every Idempotency-Key names the order it placed", not keyed_elsewhere,
                  f"{len(s.keyed)} keys, {len(keyed_elsewhere)} naming no stored order"),
        Invariant("outboxes empty", not any(s.backlogs.values()),
                  ", ".join(f"{name}: {n}" for name, n in s.backlogs.items())),
    ]


def _database(where: str) -> Backend:
    """The store at `where`: a postgresql:// URL, or the path of a SQLite file that must exist."""
    if where.startswith(("postgresql://", "postgres://")):
        return open_database(StorageSettings(database_url=where), "")
    if not os.path.exists(where):
        raise FileNotFoundError(f"no store at {where}")
    directory, filename = os.path.split(os.path.abspath(where))
    return open_database(StorageSettings(data_dir=directory), filename)


def read(order_db: str, inventory_db: str, notification_db: str,
         retention: float | None = None) -> Snapshot:
    """Read a snapshot from the three stores (SQLite paths or PostgreSQL URLs).

    `retention`: the deduplication window in seconds (DEDUP_RETENTION when None).
    """
    window = retention_settings().window if retention is None else retention
    databases = [_database(where) for where in (order_db, inventory_db, notification_db)]
    orders, inventory, notifications = (OrderStore(databases[0]), InventoryStore(databases[1]),
                                        NotificationStore(databases[2]))
    try:
        return _snapshot(orders, inventory, notifications, time.time() - window)
    finally:
        for db in databases:
            db.close()


def _snapshot(orders: OrderStore, inventory: InventoryStore,
              notifications: NotificationStore, window_start: float) -> Snapshot:
    # Read before the notifications: an order decided meanwhile is inside the window anyway.
    expired = frozenset(inventory.decided_before(window_start))
    return Snapshot(
        orders=orders.statuses(), outcomes=inventory.outcomes(),
        answered=inventory.answered_events(), stock=inventory.stock_levels(),
        notified=notifications.result_events(),
        backlogs={"order-service": orders.outbox_backlog(),
                  "inventory-service": inventory.outbox_backlog()},
        expired=expired, keyed=frozenset(orders.keyed_orders()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.audit", description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "./data"),
                        help="directory holding all three stores (default: $DATA_DIR or ./data)")
    parser.add_argument("--orders-db", help="OrderService's orders.db")
    parser.add_argument("--inventory-db", help="InventoryService's inventory.db")
    parser.add_argument("--notifications-db", help="NotificationService's notifications.db")
    parser.add_argument("--orders-url", help="OrderService's PostgreSQL database (its DATABASE_URL)")
    parser.add_argument("--inventory-url", help="InventoryService's PostgreSQL database")
    parser.add_argument("--notifications-url", help="NotificationService's PostgreSQL database")
    parser.add_argument("--retention", help="NotificationService's DEDUP_RETENTION (default: "
                        "$DEDUP_RETENTION or 7d); older orders are not checked for a notification")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    paths = (args.orders_url or args.orders_db or os.path.join(args.data_dir, "orders.db"),
             args.inventory_url or args.inventory_db or os.path.join(args.data_dir, "inventory.db"),
             args.notifications_url or args.notifications_db
             or os.path.join(args.data_dir, "notifications.db"))
    try:
        retention = (env_duration({"--retention": args.retention}, "--retention", 0.0, 1.0,
                                  3650 * 86400.0) if args.retention else None)
        results = check(read(*paths, retention))
    except (OSError, sqlite3.Error, ConfigError) as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        for r in results:
            print(f"[{'OK' if r.ok else 'BROKEN'}] {r.name}: {r.figures}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
