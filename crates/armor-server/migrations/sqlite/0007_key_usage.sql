-- Requests per API key and time bucket: accepted ones (`code` empty) and
-- refused ones by their error code. `grain` is the bucket's length in
-- seconds (60: minute, 3600: hour; days are summed from hours) and
-- `start` its first second (Unix time). Each node adds its counts to the
-- row (an upsert that adds), so several nodes share a bucket. Old rows are
-- deleted by the retention clean-up, by grain and start.
CREATE TABLE key_usage (
    key_id TEXT    NOT NULL,
    grain  INTEGER NOT NULL,
    start  INTEGER NOT NULL,
    code   TEXT    NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (key_id, grain, start, code)
);
CREATE INDEX key_usage_grain_start ON key_usage(grain, start);
