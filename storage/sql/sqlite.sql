-- sagalog journal, SQLite schema (version 1; PRAGMA user_version holds it).
--
-- The design in one page:
--   * events is the only source of truth. It is append-only: the triggers
--     below refuse UPDATE and DELETE, whatever connection tries.
--   * position is the global order. Every write runs inside BEGIN IMMEDIATE,
--     so one writer at a time (across processes) allocates MAX(position) + 1
--     and commits; a reader can never see position N+1 before N. AUTOINCREMENT
--     keeps a position from ever being reused.
--   * UNIQUE(namespace, stream_id, version) is the optimistic-concurrency guard
--     (the recorder checks the version first to report a ConcurrencyError; the
--     constraint is the backstop).
--   * snapshots, checkpoints and work are derived data: they can be dropped
--     and rebuilt from events.
--   * times are integers: microseconds since 1970-01-01 UTC, so they sort and
--     compare exactly.

CREATE TABLE IF NOT EXISTS namespaces (
    name  TEXT PRIMARY KEY
) WITHOUT ROWID;

INSERT OR IGNORE INTO namespaces (name) VALUES ('default');

CREATE TABLE IF NOT EXISTS events (
    position     INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace    TEXT    NOT NULL,
    stream_id    TEXT    NOT NULL,
    version      INTEGER NOT NULL CHECK (version >= 1),
    type         TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    metadata     TEXT    NOT NULL,  -- JSON object of strings
    recorded_at  INTEGER NOT NULL,  -- microseconds since the epoch, UTC
    UNIQUE (namespace, stream_id, version)
);

CREATE INDEX IF NOT EXISTS events_by_namespace_position ON events (namespace, position);

CREATE TRIGGER IF NOT EXISTS events_refuse_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'sagalog events are append-only: UPDATE refused');
END;

CREATE TRIGGER IF NOT EXISTS events_refuse_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'sagalog events are append-only: DELETE refused');
END;

CREATE TABLE IF NOT EXISTS snapshots (
    namespace  TEXT    NOT NULL,
    stream_id  TEXT    NOT NULL,
    schema     INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    state      BLOB    NOT NULL,
    PRIMARY KEY (namespace, stream_id, schema, version)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS checkpoints (
    namespace  TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    position   INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
) WITHOUT ROWID;

-- The work index: which streams need a worker from when, and who leases them.
CREATE TABLE IF NOT EXISTS work (
    namespace         TEXT    NOT NULL,
    stream_id         TEXT    NOT NULL,
    ready_at          INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    PRIMARY KEY (namespace, stream_id)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS work_by_ready_at ON work (namespace, ready_at);
