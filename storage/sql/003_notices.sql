-- 003_notices: a group commit's NOTIFY says what it touched.
--
-- Every append transaction notifies the journal's channel. Until now the
-- payload was empty, so every listener had to query the events table to
-- learn whether the commit concerned it: a worker read its own commits back,
-- and a client awaiting a result read its instance on every commit anywhere.
-- The payload is now built by the client (see `sagalog.storage.notices`):
-- for each stream the commit appended to, its namespace, its id, the event
-- types and the `worker` that wrote them (or, for a commit too big for
-- NOTIFY's 8,000 bytes, only the namespaces and workers). Listeners read it
-- and look at the store only when it concerns them. A payload is a hint:
-- an empty one (from a client of the previous version, or the slower path
-- `sagalog_append_one`) means "something changed", and listeners look.
--
-- Workers looking for work listen on a second channel, `p_work_channel`
-- (the journal's channel with `_w` appended), which every commit notifies
-- too unless all its appends are quiet: a worker's commits to the streams it
-- holds make no work for anyone else, and waking every worker for each of
-- them cost each one a wake-up per step of every saga in the store.
--
-- This is `sagalog_append_batch` of 002_append_arrays with two more
-- arguments, `p_notice` (the NOTIFY payload) and `p_work_channel` (NULL: a
-- quiet batch); nothing else changed. The function without them stays, for
-- clients of the previous version during a rolling upgrade. Their commits
-- notify only the main channel: while they run, workers of this version find
-- the work those commits make when they poll (every second by default).

CREATE FUNCTION sagalog_append_batch(
    p_ns text[], p_sid text[], p_expected integer[], p_recorded_at timestamptz[],
    p_stream integer[], p_counts integer[], p_hint integer[], p_schedule integer[],
    p_ready_at timestamptz[], p_types text[], p_payloads bytea[], p_metadata text[],
    p_channels text[], p_notice text, OUT previous integer[], OUT positions bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    versions integer[];
    s integer;
    optimistic boolean;
    failed text;
BEGIN
    -- Why: see "Global order" in 001_journal.sql. Every read below starts
    -- after the lock, so it sees every earlier append.
    LOCK TABLE events IN EXCLUSIVE MODE;
    -- A request that expects a new stream (expected version 0) needs no
    -- read when each stream appears once in the batch: its events take
    -- versions 1, 2, ..., and if the stream exists after all, version 1 is
    -- refused by UNIQUE (namespace, stream_id, version), the failed INSERT is
    -- rolled back to the block's savepoint, and the batch is decided again
    -- with every version read (so each request still gets its own outcome).
    optimistic := p_stream IS NULL AND 0 = ANY(p_expected);
    LOOP
        -- A stream's version is its last index entry. A B-tree scan reads
        -- every entry of the stream on the leaf page it lands on, so reading
        -- backwards from the end down to a version known to exist (the hint)
        -- costs one entry instead of up to a page of them; when the stream
        -- has no entry from the hint on, it is read in full.
        versions := ARRAY(
            SELECT CASE WHEN optimistic AND p_expected[k.o] = 0 THEN 0
                        ELSE coalesce(
                            (SELECT e.version FROM events e
                              WHERE e.namespace = coalesce(k.ns, p_ns[1]) AND e.stream_id = k.sid
                                AND e.version >= k.hint
                              ORDER BY e.version DESC LIMIT 1),
                            (SELECT e.version FROM events e
                              WHERE e.namespace = coalesce(k.ns, p_ns[1]) AND e.stream_id = k.sid
                              ORDER BY e.version DESC LIMIT 1),
                            0) END
              FROM (SELECT u.ns, u.sid, u.o,
                           coalesce(p_hint[u.o],
                                    CASE WHEN p_stream IS NULL THEN p_expected[u.o] END, 0) AS hint
                      FROM unnest(p_ns, p_sid) WITH ORDINALITY AS u(ns, sid, o)) k
             ORDER BY k.o);
        IF p_stream IS NULL THEN
            previous := versions;  -- request r is stream r
        ELSE
            -- Some stream has several requests: each sees the outcome of the
            -- earlier ones (a refused request changes nothing).
            previous := array_fill(0, ARRAY[cardinality(p_stream)]);
            FOR r IN 1 .. cardinality(p_stream) LOOP
                s := p_stream[r];
                previous[r] := versions[s];
                IF p_expected[r] IN (-1, versions[s]) THEN
                    versions[s] := versions[s] + coalesce(p_counts[r], 1);
                END IF;
            END LOOP;
        END IF;
        IF NOT optimistic THEN
            positions := sagalog_insert_batch(p_ns, p_sid, p_expected, p_recorded_at, p_stream,
                                              p_counts, p_types, p_payloads, p_metadata, previous);
            EXIT;
        END IF;
        BEGIN
            positions := sagalog_insert_batch(p_ns, p_sid, p_expected, p_recorded_at, p_stream,
                                              p_counts, p_types, p_payloads, p_metadata, previous);
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            GET STACKED DIAGNOSTICS failed = CONSTRAINT_NAME;
            IF failed IS DISTINCT FROM 'events_stream_version' THEN
                RAISE;
            END IF;
            optimistic := false;
        END;
    END LOOP;
    IF p_schedule IS NOT NULL THEN
        PERFORM sagalog_schedule_batch(p_ns, p_sid, p_stream, p_expected, p_schedule,
                                       p_ready_at, previous);
    END IF;
    IF cardinality(positions) > 0 THEN
        PERFORM pg_notify(c, p_notice) FROM unnest(p_channels) AS c;
    END IF;
END
$$;

-- The function without the new arguments (clients of the previous version)
-- now calls the one above: one body to maintain, and their commits notify
-- the main channel with an empty payload, as they did.
CREATE OR REPLACE FUNCTION sagalog_append_batch(
    p_ns text[], p_sid text[], p_expected integer[], p_recorded_at timestamptz[],
    p_stream integer[], p_counts integer[], p_hint integer[], p_schedule integer[],
    p_ready_at timestamptz[], p_types text[], p_payloads bytea[], p_metadata text[],
    p_channel text, OUT previous integer[], OUT positions bigint[])
LANGUAGE sql AS $$
    SELECT b.previous, b.positions
      FROM sagalog_append_batch(p_ns, p_sid, p_expected, p_recorded_at, p_stream, p_counts, p_hint,
                                p_schedule, p_ready_at, p_types, p_payloads, p_metadata,
                                ARRAY[p_channel], '') AS b
$$;
