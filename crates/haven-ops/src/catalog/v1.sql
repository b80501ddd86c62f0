CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT NOT NULL,
    tenant         TEXT NOT NULL,
    triggered_by   TEXT NOT NULL,
    scheduled_for  TEXT,
    late           INTEGER NOT NULL DEFAULT 0,
    status         TEXT NOT NULL,
    created        TEXT NOT NULL,
    started        TEXT,
    finished       TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    error          TEXT,
    point          TEXT,
    bytes          INTEGER,
    bytes_added    INTEGER,
    seconds        REAL,
    progress_done  INTEGER NOT NULL DEFAULT 0,
    progress_total INTEGER NOT NULL DEFAULT 0,
    component      TEXT
);
CREATE INDEX jobs_by_tenant ON jobs (tenant, id);
CREATE INDEX jobs_by_status ON jobs (status);
CREATE TABLE job_log (
    id     INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    time   TEXT NOT NULL,
    line   TEXT NOT NULL
);
CREATE INDEX job_log_by_job ON job_log (job_id, id);
CREATE TABLE attempts (
    job_id   INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    n        INTEGER NOT NULL,
    started  TEXT NOT NULL,
    finished TEXT,
    status   TEXT NOT NULL,
    error    TEXT,
    details  TEXT,
    PRIMARY KEY (job_id, n)
);
CREATE TABLE points (
    tenant      TEXT NOT NULL,
    id          TEXT NOT NULL,
    started     TEXT NOT NULL,
    finished    TEXT NOT NULL,
    status      TEXT NOT NULL,
    components  TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    bytes_added INTEGER NOT NULL,
    seconds     REAL NOT NULL,
    source      TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX points_by_time ON points (tenant, started);
CREATE TABLE verifies (
    id              INTEGER PRIMARY KEY,
    job_id          INTEGER REFERENCES jobs (id) ON DELETE SET NULL,
    tenant          TEXT NOT NULL,
    point           TEXT NOT NULL,
    time            TEXT NOT NULL,
    passed          INTEGER NOT NULL,
    restore_seconds REAL NOT NULL,
    report          TEXT NOT NULL
);
CREATE INDEX verifies_by_tenant ON verifies (tenant, time);
CREATE TABLE alerts (
    key         TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    first_fired TEXT NOT NULL,
    last_sent   TEXT,
    resolved_at TEXT,
    message     TEXT NOT NULL
);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
