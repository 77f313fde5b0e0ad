-- 004_tickets: a start can hand its instance to an idle worker, without a claim.
--
-- A worker with free slots and nothing to claim leaves tickets here, a few
-- at most, one per slot it offers: its id, the channel it listens on for
-- hand-offs, and when the lease it offers runs out (renewed by its
-- heartbeat, deleted when it drains). A start
-- appended alone (one request in its commit) takes one ticket of its
-- namespace in the same statement (FOR UPDATE SKIP LOCKED, so concurrent
-- starts never wait for each other), writes the instance's work-index row
-- already leased to that worker until the ticket's expiry, and notifies the
-- ticket's channel instead of the work channel: the worker starts the
-- instance on the notification, and no other worker wakes up for it. One
-- ticket is one hand-off.
--
-- A ticket is a hint like a notification: one left by a worker that was
-- killed costs the start that takes it a lease's wait, after which any
-- worker takes the instance over, as after a claim by a killed worker.
-- Starts take the ticket renewed last, so a dead worker's (which no
-- heartbeat renews) are taken only when no live worker has one left.
-- Like work_index, the table holds nothing the events do not: it may be
-- emptied at any time.

CREATE TABLE tickets (
    namespace text NOT NULL,
    owner text NOT NULL,
    slot integer NOT NULL,
    channel text NOT NULL,
    lease_expires_at timestamptz NOT NULL,
    PRIMARY KEY (namespace, owner, slot)
);
