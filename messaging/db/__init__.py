"""The database plumbing: the stores' seam (backend), SQLite, PostgreSQL, their dialect, migrations,
the shared store, outbox, inbox, retention."""
