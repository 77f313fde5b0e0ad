-- 001_journal: the append-only journal and its derived tables.
--
-- Design
-- ------
-- `events` is the only source of truth. Every other table here (snapshots,
-- checkpoints, work_index) is derived and may be dropped and rebuilt from the
-- events. A statement trigger refuses UPDATE, DELETE and TRUNCATE of events:
-- history is never rewritten, not even by an operator with a stray query.
--
-- Every object lives in the first schema of the connection's search_path
-- (names are unqualified on purpose), so one database can hold several
-- journals side by side, one per schema; the tests rely on that.
--
-- Global order
-- ------------
-- `position` comes from an identity sequence. Sequence values are handed out
-- at INSERT time but become visible at COMMIT time, so two concurrent writers
-- can commit out of order: a reader paging by position would see 11, move
-- its cursor past 10, and never see 10 when it commits a moment later. The
-- append transaction therefore starts with
--
--     LOCK TABLE events IN EXCLUSIVE MODE
--
-- (taken by the application, not here). EXCLUSIVE conflicts with the ROW
-- EXCLUSIVE lock every INSERT takes but not with the ACCESS SHARE lock of a
-- plain SELECT, so writers allocate and commit positions one transaction at a
-- time while readers are never blocked. Postgres makes a transaction visible
-- before it releases its locks, so the next writer's events always commit
-- after the previous writer's. Group commit (many appends in one transaction)
-- makes the serialisation cheap. See
-- https://www.postgresql.org/docs/current/explicit-locking.html#LOCKING-TABLES
--
-- Appending
-- ---------
-- `sagalog_append` (below) is one group commit: the application calls it in
-- autocommit mode, so the call is the whole transaction and costs one round
-- trip however many appends it carries. In order it: takes the events lock;
-- reads the current versions of every stream of the batch in one query;
-- decides each request in batch order (a request that expected another
-- version is refused, writes nothing, and does not affect the others; a
-- later request of the same stream sees the earlier one's events); inserts
-- all accepted events with one multi-row INSERT, in batch order, so
-- positions follow the batch; applies the accepted requests' work-index
-- changes; sends one NOTIFY. The application builds the returned events.
-- `sagalog_append_one` does the same for a batch of one request with scalar
-- arguments (the usual case when appenders are few).
--
-- Lock order (deadlock freedom)
-- -----------------------------
-- 1. `events` table lock (appends only; appends are thus serialised);
-- 2. `work_index` rows, always in (namespace, stream_id) order: the append's
--    upsert sorts its rows, renew/release lock theirs in that order too, and
--    claim never waits (FOR UPDATE SKIP LOCKED).
-- Nothing that holds a work_index row ever waits for the events lock.
--
-- Namespaces
-- ----------
-- `events.namespace` has no foreign key to `namespaces`: a foreign key check
-- locks the namespace row (FOR KEY SHARE) once per inserted event, which
-- costs a tuple write per transaction on the hottest path. The Journal checks
-- the namespace when a view of it is opened instead.

CREATE TABLE namespaces (
    name text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO namespaces (name) VALUES ('default');

CREATE TABLE events (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace text NOT NULL,
    stream_id text NOT NULL,
    version integer NOT NULL CHECK (version >= 1),
    type text NOT NULL,
    payload bytea NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL,
    -- The optimistic-concurrency guard; also the index read_stream and the
    -- current-version lookups scan.
    CONSTRAINT events_stream_version UNIQUE (namespace, stream_id, version)
);
-- read_all and wait_for_new page one namespace in global order.
CREATE INDEX events_namespace_position ON events (namespace, position);

CREATE FUNCTION events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sagalog events are append-only: % on table events is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'Append a compensating event instead of changing history.';
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

CREATE TABLE snapshots (
    namespace text NOT NULL,
    stream_id text NOT NULL,
    version integer NOT NULL,
    schema integer NOT NULL,
    state bytea NOT NULL,
    PRIMARY KEY (namespace, stream_id, schema, version)
);

CREATE TABLE checkpoints (
    namespace text NOT NULL,
    name text NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (namespace, name)
);

-- Which streams need a worker, from when, and who leases them. Written in
-- the same transaction as the append that changes it (Schedule).
CREATE TABLE work_index (
    namespace text NOT NULL,
    stream_id text NOT NULL,
    ready_at timestamptz NOT NULL,
    lease_owner text,
    lease_expires_at timestamptz,
    PRIMARY KEY (namespace, stream_id)
);
CREATE INDEX work_index_ready ON work_index (namespace, ready_at);

-- One group commit (see "Appending" above). The batch travels as one JSON
-- document (the client encodes it in microseconds; a dozen array parameters
-- cost the driver far more than the whole transaction):
--   [streams, requests, events]
--   streams:  [[namespace, stream_id], ...]  (distinct, in order of first use)
--   requests: [[stream (1-based index into streams), expected version (-1: any),
--               event count, recorded_at, schedule (0: none, 1: set, 2: remove),
--               ready_at], ...]
--   events:   [[request (1-based), offset (1, 2, ... in its request), type,
--               payload (base64), metadata (object), namespace, stream_id], ...]
--             (batch order; the stream is repeated so that no row has to look
--             it up)
-- Returns each request's stream version before it (for a refused request:
-- the version that refused it) and the positions of the accepted events.
CREATE FUNCTION sagalog_append(batch jsonb, channel text,
                               OUT previous integer[], OUT positions bigint[])
LANGUAGE plpgsql AS $$
BEGIN
    -- Why: see "Global order" above.
    LOCK TABLE events IN EXCLUSIVE MODE;
    IF jsonb_array_length(batch->0) = jsonb_array_length(batch->1) THEN
        -- The usual batch: every stream once, so request r is stream r and
        -- each request is decided on its own, in one statement. It starts
        -- after the lock, so its snapshot sees every earlier append.
        WITH request AS (
            SELECT q.o, s.v->>0 AS ns, s.v->>1 AS sid, (q.r->>1)::integer AS expected,
                   (q.r->>3)::timestamptz AS recorded_at,
                   coalesce((SELECT max(e.version) FROM events e
                             WHERE e.namespace = s.v->>0 AND e.stream_id = s.v->>1), 0) AS version
              FROM jsonb_array_elements(batch->1) WITH ORDINALITY AS q(r, o)
              JOIN jsonb_array_elements(batch->0) WITH ORDINALITY AS s(v, o) USING (o)),
        inserted AS (
            INSERT INTO events (namespace, stream_id, version, type, payload, metadata,
                                recorded_at)
            SELECT r.ns, r.sid, r.version + (x.e->>1)::integer, x.e->>2,
                   decode(x.e->>3, 'base64'), x.e->4, r.recorded_at
              FROM jsonb_array_elements(batch->2) WITH ORDINALITY AS x(e, o)
              JOIN request r ON r.o = (x.e->>0)::integer
             WHERE r.expected IN (-1, r.version)
             ORDER BY x.o
            RETURNING position)
        SELECT (SELECT array_agg(version ORDER BY o) FROM request),
               (SELECT coalesce(array_agg(position ORDER BY position), '{}') FROM inserted)
          INTO previous, positions;
    ELSE
        SELECT a.previous, a.positions INTO previous, positions FROM sagalog_append_in_turn(batch) a;
    END IF;
    IF jsonb_path_exists(batch, 'strict $[1][*] ? (@[4] != 0)') THEN
        PERFORM sagalog_schedule(batch, previous);
    END IF;
    IF cardinality(positions) > 0 THEN
        PERFORM pg_notify(channel, '');
    END IF;
END
$$;

-- A batch in which some stream has several requests: each request must see
-- the outcome of the earlier ones, so they are decided one by one. Called by
-- sagalog_append with the events lock held.
CREATE FUNCTION sagalog_append_in_turn(batch jsonb, OUT previous integer[],
                                       OUT positions bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    versions integer[];
    req_stream integer[];
    req_expected integer[];
    req_count integer[];
    req_recorded_at timestamptz[];
    accepted boolean[] := '{}';
    current_version integer;
BEGIN
    SELECT array_agg(coalesce((SELECT max(e.version) FROM events e
                               WHERE e.namespace = k.s->>0 AND e.stream_id = k.s->>1), 0)
                     ORDER BY k.o)
      INTO versions
      FROM jsonb_array_elements(batch->0) WITH ORDINALITY AS k(s, o);
    SELECT array_agg((q.r->>0)::integer ORDER BY q.o), array_agg((q.r->>1)::integer ORDER BY q.o),
           array_agg((q.r->>2)::integer ORDER BY q.o),
           array_agg((q.r->>3)::timestamptz ORDER BY q.o)
      INTO req_stream, req_expected, req_count, req_recorded_at
      FROM jsonb_array_elements(batch->1) WITH ORDINALITY AS q(r, o);
    previous := '{}';
    FOR r IN 1 .. cardinality(req_stream) LOOP
        current_version := versions[req_stream[r]];
        previous := previous || current_version;
        IF req_expected[r] <> -1 AND req_expected[r] <> current_version THEN
            accepted := accepted || false;
        ELSE
            accepted := accepted || true;
            versions[req_stream[r]] := current_version + req_count[r];
        END IF;
    END LOOP;
    -- Refused requests' events are skipped; ORDER BY keeps batch order, and
    -- identity values are drawn in that order.
    WITH inserted AS (
        INSERT INTO events (namespace, stream_id, version, type, payload, metadata, recorded_at)
        SELECT x.ns, x.sid, previous[x.r] + x.n, x.t, decode(x.p, 'base64'), x.m,
               req_recorded_at[x.r]
          FROM (SELECT (e->>0)::integer, (e->>1)::integer, e->>2, e->>3, e->4, e->>5, e->>6, o
                  FROM jsonb_array_elements(batch->2) WITH ORDINALITY AS j(e, o))
               AS x(r, n, t, p, m, ns, sid, o)
         WHERE accepted[x.r]
         ORDER BY x.o
        RETURNING position)
    SELECT coalesce(array_agg(position ORDER BY position), '{}') INTO positions FROM inserted;
END
$$;

-- The same for a batch of one request, the common case when appenders are
-- few: scalar arguments and four statements instead of the general path's
-- array bookkeeping, which costs more than the INSERT itself.
--   p_events: [[type, payload (base64), metadata (object)], ...]
-- Returns the stream's version before the append, and the new positions
-- (NULL when the expected version did not hold and nothing was written).
CREATE FUNCTION sagalog_append_one(
    p_ns text, p_sid text, p_expected integer, p_recorded_at timestamptz,
    p_schedule smallint, p_ready_at timestamptz, p_events jsonb, p_channel text,
    OUT previous integer, OUT positions bigint[])
LANGUAGE plpgsql AS $$
BEGIN
    -- Why: see "Global order" above.
    LOCK TABLE events IN EXCLUSIVE MODE;
    -- One statement reads the version and inserts when it matches; it starts
    -- after the lock, so its snapshot sees every earlier append.
    WITH current_version AS (
        SELECT coalesce(max(e.version), 0) AS v
          FROM events e WHERE e.namespace = p_ns AND e.stream_id = p_sid),
    inserted AS (
        INSERT INTO events (namespace, stream_id, version, type, payload, metadata, recorded_at)
        SELECT p_ns, p_sid, c.v + j.o::integer, j.e->>0, decode(j.e->>1, 'base64'), j.e->2,
               p_recorded_at
          FROM current_version c, jsonb_array_elements(p_events) WITH ORDINALITY AS j(e, o)
         WHERE p_expected IN (-1, c.v)
         ORDER BY j.o
        RETURNING position)
    SELECT (SELECT v FROM current_version), (SELECT array_agg(position ORDER BY position) FROM inserted)
      INTO previous, positions;
    IF positions IS NULL THEN
        RETURN;
    END IF;
    IF p_schedule = 1 THEN
        INSERT INTO work_index AS w (namespace, stream_id, ready_at) VALUES (p_ns, p_sid, p_ready_at)
        ON CONFLICT (namespace, stream_id) DO UPDATE SET ready_at = excluded.ready_at;
    ELSIF p_schedule = 2 THEN
        DELETE FROM work_index w WHERE w.namespace = p_ns AND w.stream_id = p_sid;
    END IF;
    PERFORM pg_notify(p_channel, '');
END
$$;

-- The work-index changes of a group commit: among the accepted requests
-- (those whose expected version matched ``previous``), the last one of a
-- stream that carries a schedule wins. Rows are locked in (namespace,
-- stream_id) order first (see "Lock order").
CREATE FUNCTION sagalog_schedule(batch jsonb, previous integer[])
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    w_ns text[];
    w_id text[];
    w_ready timestamptz[];
BEGIN
    SELECT array_agg(ns ORDER BY ns, sid), array_agg(sid ORDER BY ns, sid),
           array_agg(ready ORDER BY ns, sid)
      INTO w_ns, w_id, w_ready
      FROM (SELECT DISTINCT ON (k) batch->0->(k - 1)->>0 AS ns, batch->0->(k - 1)->>1 AS sid,
                   CASE WHEN kind = 1 THEN ready END AS ready
              FROM (SELECT (q.r->>0)::integer AS k, (q.r->>1)::integer AS expected,
                           (q.r->>4)::integer AS kind, (q.r->>5)::timestamptz AS ready, q.o
                      FROM jsonb_array_elements(batch->1) WITH ORDINALITY AS q(r, o)) req
             WHERE kind <> 0 AND expected IN (-1, previous[o])
             ORDER BY k, o DESC) last;
    PERFORM 1 FROM work_index
      WHERE (namespace, stream_id) IN (SELECT * FROM unnest(w_ns, w_id))
      ORDER BY namespace, stream_id FOR UPDATE;
    INSERT INTO work_index (namespace, stream_id, ready_at)
    SELECT n, s, t FROM unnest(w_ns, w_id, w_ready) AS w(n, s, t)
     WHERE t IS NOT NULL ORDER BY n, s
    ON CONFLICT (namespace, stream_id) DO UPDATE SET ready_at = excluded.ready_at;
    DELETE FROM work_index
     WHERE (namespace, stream_id) IN
           (SELECT n, s FROM unnest(w_ns, w_id, w_ready) AS w(n, s, t) WHERE t IS NULL);
END
$$;
