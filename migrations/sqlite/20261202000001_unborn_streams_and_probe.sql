-- A stream's row now exists only while the stream has publications: the first append creates
-- it, retention removes it when it is left empty, and a position read creates nothing (the
-- position of a stream without a row is an "unborn" one, see src/history/unborn.rs). Rows that
-- position reads created for streams that never got a publication are removed once here.
-- `last_offset = 0` is re-checked on the row being deleted, so an append racing this (another
-- node of an older version) keeps its row.
DELETE FROM streams
 WHERE last_offset = 0
   AND NOT EXISTS (SELECT 1 FROM publications p WHERE p.stream_id = streams.id);

-- The availability probe commits a real write here (one row, overwritten), so that a store that
-- cannot be written (a full disk, a read-only file) stays unavailable instead of passing a probe
-- that writes nothing.
CREATE TABLE IF NOT EXISTS store_probe (
    id    INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL
);
