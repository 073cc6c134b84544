"""Database.write: group commit from many threads, each job isolated in its own savepoint."""
from __future__ import annotations

import sqlite3
import threading

import pytest

from messaging.db import sqlite as sqlite_module
from messaging.db.sqlite import Database
from messaging.settings import StorageSettings
from tests.client import wait_for
from tests.unit.factories import connect
from tests.unit.fake_pika import FakeClock


@pytest.fixture
def db(tmp_path) -> Database:
    database = Database(str(tmp_path / "t.db"), StorageSettings(data_dir=str(tmp_path),
                                                                busy_timeout_ms=100))
    database.conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, thread TEXT)")
    return database


def count(db: Database) -> int:
    return db.conn.execute("SELECT COUNT(*) FROM t").fetchone()[0]


def test_write_returns_the_jobs_result_and_commits(db):
    assert db.write(lambda conn: conn.execute("INSERT INTO t (k) VALUES (1)").rowcount) == 1
    other = connect(db)
    assert other.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1, "visible to another connection"


def test_many_threads_all_commit_in_fewer_transactions(db):
    commits = []
    db.conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    barrier = threading.Barrier(16)
    errors = []

    def worker(n: int) -> None:
        db.conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        barrier.wait()
        for i in range(50):
            try:
                db.write(lambda conn, k=n * 1000 + i: conn.execute(
                    "INSERT INTO t (k, thread) VALUES (?, ?)", (k, threading.current_thread().name)))
            except Exception as exc:  # pragma: no cover - surfaced by the assertion below
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert count(db) == 16 * 50
    assert len(commits) < 16 * 50, "concurrent jobs share commits"
    assert db.commits == len(commits), "every commit is counted, once"


def test_a_failing_job_is_rolled_back_alone_and_its_error_raised_in_its_thread(db):
    outcomes: dict[str, object] = {}
    gate = threading.Event()

    def slow_first(conn):
        conn.execute("INSERT INTO t (k) VALUES (1)")
        gate.wait(5)  # hold the lead so the next jobs queue up behind it

    def failing(conn):
        conn.execute("INSERT INTO t (k) VALUES (2)")
        raise ValueError("bad job")

    def good(conn):
        conn.execute("INSERT INTO t (k) VALUES (3)")
        return "ok"

    def run(name, job):
        try:
            outcomes[name] = db.write(job)
        except Exception as exc:
            outcomes[name] = exc

    leader = threading.Thread(target=run, args=("slow", slow_first))
    leader.start()
    followers = [threading.Thread(target=run, args=args) for args in (("bad", failing), ("good", good))]
    for follower in followers:
        follower.start()
    wait_for(lambda: len(db._queue) >= 2, timeout=5, what="both followers queued behind the leader")
    gate.set()
    for thread in [leader, *followers]:
        thread.join(timeout=10)
    assert isinstance(outcomes["bad"], ValueError)
    assert outcomes["good"] == "ok"
    assert sorted(r[0] for r in db.conn.execute("SELECT k FROM t")) == [1, 3]


def test_a_lone_failing_job_writes_nothing_raises_in_its_thread_and_leaves_the_lead_free(db):
    def failing(conn):
        conn.execute("INSERT INTO t (k) VALUES (1)")
        raise ValueError("bad job")

    with pytest.raises(ValueError, match="bad job"):
        db.write(failing)
    assert count(db) == 0 and not db.conn.in_transaction
    assert db.commits == 0, "only committed transactions count"
    assert db.write(lambda conn: conn.execute("INSERT INTO t (k) VALUES (2)").rowcount) == 1
    assert count(db) == 1 and db.commits == 1


def test_a_lone_job_needs_no_savepoint(db):
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    db.write(lambda conn: conn.execute("INSERT INTO t (k) VALUES (1)"))
    assert statements == ["BEGIN IMMEDIATE", "INSERT INTO t (k) VALUES (1)", "COMMIT"]


def test_a_lone_job_whose_error_already_ended_the_transaction_gets_its_own_error(db):
    def failing(conn):
        conn.execute("INSERT INTO t (k) VALUES (1)")
        conn.execute("ROLLBACK")  # as SQLite does itself on some errors (a full disk)
        raise ValueError("disk full")

    with pytest.raises(ValueError, match="disk full"):
        db.write(failing)
    assert count(db) == 0 and db.write(lambda conn: 7) == 7


def test_a_locked_database_fails_every_job_with_the_transient_error(db):
    holder = connect(db)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            db.write(lambda conn: conn.execute("INSERT INTO t (k) VALUES (1)"))
    finally:
        holder.execute("ROLLBACK")
    assert count(db) == 0
    db.write(lambda conn: conn.execute("INSERT INTO t (k) VALUES (1)"))
    assert count(db) == 1, "the lead is free again after a failure"


def _wal_autocheckpoint(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]


def test_commits_checkpoint_the_wal_themselves_by_default(db):
    assert _wal_autocheckpoint(db.conn) == 1000, "SQLite's default: the commit past 1,000 pages"


def test_background_checkpoints_take_the_wal_copy_out_of_commits(db, tmp_path):
    db.start_checkpoints(interval=0.05)
    try:
        assert _wal_autocheckpoint(db.conn) == 0, "the existing connection stops checkpointing"
        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.append(_wal_autocheckpoint(db.conn)))
        thread.start()
        thread.join()
        assert seen == [0], "so do connections opened afterwards, in any thread"
        main_file = tmp_path / "t.db"
        before = main_file.stat().st_size
        for k in range(2000):  # about 1,500 WAL pages: past the default threshold
            db.write(lambda conn, k=k: conn.execute("INSERT INTO t (k, thread) VALUES (?, ?)",
                                                    (k, "x" * 2000)))
        # Only a checkpoint copies pages into the main file; the commits no longer do it.
        wait_for(lambda: main_file.stat().st_size > before + 2_000_000, timeout=10,
                 what="the background checkpoint to copy the WAL into the database file")
    finally:
        db.stop_checkpoints()
    assert count(db) == 2000


def test_without_a_checkpointer_nothing_copies_the_wal_when_autocheckpoint_is_off(tmp_path):
    """The control for the test above: its file growth comes from the checkpoint thread."""
    database = Database(str(tmp_path / "c.db"), StorageSettings(data_dir=str(tmp_path)))
    database.conn.execute("PRAGMA wal_autocheckpoint = 0")
    database.conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, thread TEXT)")
    before = (tmp_path / "c.db").stat().st_size
    for k in range(2000):
        database.write(lambda conn, k=k: conn.execute("INSERT INTO t VALUES (?, ?)", (k, "x" * 2000)))
    assert (tmp_path / "c.db").stat().st_size == before


def test_under_steady_writes_the_wal_starts_over_instead_of_growing(db, tmp_path):
    """Writers that never pause give a PASSIVE checkpoint no moment at which every frame is copied.

    Without the checkpoint that holds the writers back, the WAL takes every frame written here (about
    200 MB for 36 MB of rows); with it, the WAL starts over each time it has passed RESTART_FRAMES
    pages (4 MB) at a checkpoint. The bound leaves room for checkpoints delayed on a busy machine.
    """
    wal = tmp_path / "t.db-wal"
    rows, threads = 12_000, 4
    largest = 0
    db.start_checkpoints(interval=0.02)
    try:
        def writer(first: int) -> None:
            for k in range(first, rows, threads):
                db.write(lambda conn, k=k: conn.execute("INSERT INTO t VALUES (?, ?)",
                                                        (k, "x" * 3000)))  # about a page each
        workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        while any(worker.is_alive() for worker in workers):
            largest = max(largest, wal.stat().st_size if wal.exists() else 0)
            workers[0].join(timeout=0.01)
    finally:
        db.stop_checkpoints()
    assert count(db) == rows
    # Half of what it grows to without that checkpoint: a loaded 2-core machine delays
    # checkpoints (up to 60 MB seen while three other test suites ran beside it).
    assert largest < 100_000_000, f"the WAL grew to {largest / 1e6:.0f} MB"


@pytest.mark.parametrize(("commits", "seconds", "due"), [
    (0, 60.0, False),  # nothing written: nothing to copy, however long it has been
    (1, sqlite_module.QUIET_INTERVAL - 0.01, False),
    (1, sqlite_module.QUIET_INTERVAL, True),
    (sqlite_module.BUSY_COMMITS - 1, 0.0, False),
    (sqlite_module.BUSY_COMMITS, 0.0, True),  # busy: keep the WAL short
])
def test_when_a_checkpoint_is_due(commits, seconds, due):
    assert sqlite_module.checkpoint_due(commits, seconds) is due


class ScriptedStop:
    """The checkpointer's stop event: each wait runs the next step of the script, then it is set."""

    def __init__(self, *steps) -> None:
        self.steps = list(steps)

    def wait(self, timeout: float) -> bool:
        if not self.steps:
            return True
        self.steps.pop(0)()
        return False


def test_the_checkpointer_checkpoints_only_when_commits_call_for_it(tmp_path, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(sqlite_module, "time", clock)
    checkpoints: list[float] = []
    monkeypatch.setattr(sqlite_module._Checkpointer, "checkpoint",
                        staticmethod(lambda conn, fd: checkpoints.append(clock.now)))
    commits = [0]
    start = clock.now

    def step(new_commits: int, seconds: float):
        def run() -> None:
            commits[0] += new_commits
            clock.advance(seconds)
        return run

    settings = StorageSettings(data_dir=str(tmp_path))
    checkpointer = sqlite_module._Checkpointer(str(tmp_path / "c.db"), settings, 0.2, lambda: commits[0])
    checkpointer._stopping = ScriptedStop(  # type: ignore[assignment]
        step(0, 5.0),  # idle: nothing
        step(1, 0.2),  # a commit after a long quiet: checkpoint (5.2)
        step(1, 0.2), step(0, 0.2),  # another, but the last checkpoint is recent: wait
        step(0, 0.7),  # over a second since the last one: checkpoint (6.3)
        step(sqlite_module.BUSY_COMMITS, 0.2),  # busy: at once (6.5)
        step(3, 0.2),  # a few more, just after: wait
    )
    checkpointer.run()
    assert [round(t - start, 1) for t in checkpoints] == [5.2, 6.3, 6.5, 6.7]  # the last on stopping
