-- Each cron entry and the schedule it runs on, with when a node first ran it
-- so. A tick from before then was never owed: the catch-up of missed ticks
-- leaves it alone, so a first start (or a new or changed entry) does not fire
-- last night's run at once.
CREATE TABLE tuma_cron_entries (
    entry    text        PRIMARY KEY,
    -- NULL: carried over from the ticks fired before this table existed;
    -- the first node to run the entry fills it in and keeps `since`.
    schedule text,
    since    timestamptz NOT NULL
);

INSERT INTO tuma_cron_entries (entry, schedule, since)
SELECT entry, NULL, min(tick_at) FROM tuma_cron_ticks GROUP BY entry;
