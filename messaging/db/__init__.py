"""The database plumbing: SQLite, PostgreSQL, their dialect, the shared store, outbox, inbox, retention."""
