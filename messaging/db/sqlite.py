"""SQLite plumbing shared by every store: WAL files, explicit transactions and group commit."""
from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from messaging.db.backend import Connection
from messaging.db.dialect import SQLITE
from messaging.settings import StorageSettings

T = TypeVar("T")
logger = logging.getLogger(__name__)

CHECKPOINT_INTERVAL = 0.2  # seconds between the checkpoint thread's looks at the commits
BUSY_COMMITS = 50  # commits since the last checkpoint that make the next look checkpoint at once
QUIET_INTERVAL = 1.0  # seconds after which any commit since the last checkpoint is checkpointed
RESTART_FRAMES = 1000  # WAL frames past which a checkpoint holds the writers back to finish
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes a WAL file is cut back to when it starts over


def open_db(path: str, settings: StorageSettings, autocheckpoint: bool = True) -> sqlite3.Connection:
    """Open `path` in autocommit mode with WAL, the configured sync level and busy timeout.

    With `autocheckpoint` off, commits never copy the WAL back into the database file themselves;
    something else must (see `Database.start_checkpoints`).
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=settings.busy_timeout_ms / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {settings.synchronous}")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
    if not autocheckpoint:
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn


def lock_path(path: str) -> str:
    """The file whose flock queues the writers of the SQLite file `path`, across processes."""
    return path + ".lock"


def chunks(items: list[T], size: int = 500) -> list[list[T]]:
    """Split a multi-row statement's rows so it stays far below SQLite's limit of variables."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def select_in(conn: Connection, query: str, values: set[str]) -> list[Any]:
    """Rows of `query`, whose `{}` is an IN list, for all `values`, in chunks."""
    rows: list[Any] = []
    for chunk in chunks(sorted(values)):
        rows += conn.execute(query.format(", ".join("?" * len(chunk))), chunk).fetchall()
    return rows


class _Job:
    """One write job waiting for a shared transaction."""

    __slots__ = ("run", "done", "lead", "result", "error")

    def __init__(self, run: Callable[[sqlite3.Connection], Any]) -> None:
        self.run, self.lead = run, False
        self.done: threading.Event | None = None  # only a job that waits for a leader needs one
        self.result: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class _Checkpointer(threading.Thread):
    """Copy the WAL into the database file in the background, on a connection of its own.

    Every `interval` seconds it looks at `commits()`, this process's count of commits: after
    BUSY_COMMITS of them it checkpoints at once, to keep a busy WAL short; after fewer, once
    QUIET_INTERVAL has passed since the last checkpoint (each costs fsyncs, which a trickle of
    orders need not pay five times a second); after none, not at all.

    A PASSIVE checkpoint never waits for readers or writers, so commits go on while it copies. But
    under steady writes it never catches up: new frames arrive while it copies, and SQLite starts
    a WAL over from its beginning only when a write begins with every frame copied, so the WAL
    would grow without end (by gigabytes over some hundred thousand orders), and every read would
    search an ever longer WAL index. So once the WAL holds RESTART_FRAMES, the checkpointer copies
    what is left while it holds the writers' file lock: the first pass did the bulk, this one only
    the frames written meanwhile, and the next write starts the WAL over.
    """

    def __init__(self, path: str, settings: StorageSettings, interval: float,
                 commits: Callable[[], int]) -> None:
        super().__init__(name=f"checkpoint-{os.path.basename(path)}", daemon=True)
        self._path, self._settings, self._interval = path, settings, interval
        self._commits = commits
        self._stopping = threading.Event()

    def run(self) -> None:
        conn = open_db(self._path, self._settings, autocheckpoint=False)
        # Its own open file description: flock would not exclude this process's writers otherwise.
        lock_fd = os.open(lock_path(self._path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            checkpointed, at = self._commits(), time.monotonic()
            while not self._stopping.wait(self._interval):
                commits, now = self._commits(), time.monotonic()
                if checkpoint_due(commits - checkpointed, now - at):
                    self.checkpoint(conn, lock_fd)
                    checkpointed, at = commits, now
            self.checkpoint(conn, lock_fd)
        finally:
            conn.close()
            os.close(lock_fd)

    @staticmethod
    def checkpoint(conn: sqlite3.Connection, lock_fd: int) -> None:
        try:
            # What SQLite reports as copied may be stale already (commits go on meanwhile), so a
            # long WAL always gets the second pass.
            if _passive_checkpoint(conn) >= RESTART_FRAMES:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                try:
                    _passive_checkpoint(conn)
                finally:
                    fcntl.flock(lock_fd, fcntl.LOCK_UN)
        except sqlite3.Error as exc:  # e.g. the disk is full: the WAL keeps the data meanwhile
            logger.warning("WAL checkpoint failed: %r", exc)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5.0)


def checkpoint_due(commits: int, seconds: float) -> bool:
    """Whether `commits` made in the `seconds` since the last checkpoint call for the next one."""
    return commits >= BUSY_COMMITS or (commits > 0 and seconds >= QUIET_INTERVAL)


def _passive_checkpoint(conn: sqlite3.Connection) -> int:
    """Copy what can be copied without waiting; return the frames the WAL held."""
    _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return frames


class Database:
    """One SQLite file: a connection per thread for reads, group commit for writes.

    `write(job)` runs `job(conn)` inside a write transaction. Jobs that arrive from other threads
    while a transaction is being committed are run together in the next one (group commit), each
    inside its own savepoint (a job alone needs none), so one job's failure never undoes another's.
    Threads of a process thus never fight over SQLite's write lock (whose busy handler sleeps), and
    a burst of requests costs one commit instead of one each.
    """

    dialect = SQLITE

    def __init__(self, path: str, settings: StorageSettings) -> None:
        self.path = self.location = path
        self._settings = settings
        self._local = threading.local()
        self._lock = threading.Lock()
        self._queue: list[_Job] = []
        self._leading = False
        self._lock_fd, self._lock_pid = -1, -1
        self._checkpointer: _Checkpointer | None = None
        self.commits = 0  # transactions this process committed through `write`

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = open_db(self.path, self._settings,
                                              autocheckpoint=self._checkpointer is None)
        return conn

    def start_checkpoints(self, interval: float = CHECKPOINT_INTERVAL) -> None:
        """Copy the WAL into the database file from a background thread, not inside commits.

        SQLite's automatic checkpoint runs in whichever commit crosses 1,000 WAL pages and, with
        its fsyncs, makes that one commit (and every writer queued behind it) take milliseconds
        instead of tens of microseconds. Call once per process, before the threads that write
        open their connections.
        """
        if self._checkpointer is not None:
            return
        self._checkpointer = _Checkpointer(self.path, self._settings, interval, lambda: self.commits)
        self.conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._checkpointer.start()

    def stop_checkpoints(self) -> None:
        """Stop the checkpoint thread after a last checkpoint (SQLite checkpoints on close too)."""
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()

    def write_statement(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement as its own committed write (through the group commit); return its rows."""
        return self.write(lambda conn: conn.execute(statement, params).fetchall())

    def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run `job(conn)` in a committed write transaction and return its result (or raise)."""
        item = _Job(job)
        with self._lock:
            self._queue.append(item)
            follower = self._leading
            self._leading = True
            if follower:
                item.done = threading.Event()
        if item.done is not None:  # a follower
            item.done.wait()
            if not item.lead:
                return item.outcome()
        with self._lock:  # leading: commit everything queued so far, our own job included
            batch, self._queue = self._queue, []
        self._commit(batch)
        with self._lock:
            if self._queue:  # hand the lead to the oldest waiter
                waiter = self._queue[0]
                waiter.lead = True
                assert waiter.done is not None  # queued while we led: a follower
                waiter.done.set()
            else:
                self._leading = False
        return item.outcome()

    def _exclusive(self) -> int:
        """This process's descriptor of the file lock that queues writers across processes."""
        if self._lock_pid != os.getpid():  # opened after a fork: never share it with the parent
            self._lock_fd = os.open(lock_path(self.path), os.O_RDWR | os.O_CREAT, 0o644)
            self._lock_pid = os.getpid()
        return self._lock_fd

    def _commit(self, batch: list[_Job]) -> None:
        # Writers in other processes (gunicorn workers, replicas) queue on a file lock, which wakes
        # the next one the moment it is free, instead of polling in SQLite's sleeping busy handler.
        fd = self._exclusive()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            self._commit_locked(batch)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _commit_locked(self, batch: list[_Job]) -> None:
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:  # alone: its failure rolls back the transaction, no savepoint needed
                if not self._run_alone(conn, batch[0]):
                    return
            else:
                for item in batch:
                    conn.execute("SAVEPOINT job")
                    try:
                        item.result = item.run(conn)
                        conn.execute("RELEASE job")
                    except Exception as exc:  # handed back to the job's own thread
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                        item.error = exc
            conn.execute("COMMIT")
            self.commits += 1
        except Exception as exc:  # BEGIN or COMMIT failed: nothing was written
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for item in batch:
                item.result, item.error = None, item.error or exc
        finally:
            for item in batch:
                if item.done is not None:
                    item.done.set()

    @staticmethod
    def _run_alone(conn: sqlite3.Connection, item: _Job) -> bool:
        """Run a lone job; on its failure roll the transaction back and return False."""
        try:
            item.result = item.run(conn)
            return True
        except Exception as exc:  # handed back to the job's own thread
            item.error = exc  # first: SQLite may have ended the transaction already (a full disk)
            conn.execute("ROLLBACK")  # and then this fails, and _commit_locked keeps the job's error
            return False

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
