-- v3: disaster-recovery runs (crate haven-dr): each run of a runbook (a real run, a
-- drill, or a dry run), the state of each of its steps, and its audit log. The run's
-- state is written before and after every step, so a killed run can be resumed.
CREATE TABLE dr_runs (
    id          TEXT PRIMARY KEY,      -- e.g. dr-20261204T201500Z-3f9a
    runbook     TEXT NOT NULL,
    tenant      TEXT NOT NULL,         -- the runbook's tenant: the points restored from
    repo        TEXT NOT NULL,         -- its repository's canonical location
    into_tenant TEXT NOT NULL,         -- the target tenant ('' for a drill: scratch targets)
    mode        TEXT NOT NULL,         -- run, drill, dry-run
    point       TEXT,                  -- the recovery point chosen (null until chosen)
    state       TEXT NOT NULL,         -- running, waiting (for a decision), succeeded, failed, aborted
    started     TEXT NOT NULL,
    finished    TEXT,
    seconds     REAL,                  -- the measured RTO: start to the last step's end
    actor       TEXT NOT NULL,         -- who and where: user@host
    owner_pid   INTEGER,               -- the process running it now (a dead one: killed)
    error       TEXT,
    plan        TEXT NOT NULL          -- JSON: the runbook as resolved when the run started
);
CREATE INDEX dr_runs_by_runbook ON dr_runs (runbook, started);
CREATE INDEX dr_runs_by_tenant ON dr_runs (tenant, repo, mode, started);

CREATE TABLE dr_steps (
    run_id   TEXT NOT NULL,
    step     TEXT NOT NULL,
    state    TEXT NOT NULL,            -- pending, running, succeeded, failed, skipped, interrupted
    attempts INTEGER NOT NULL DEFAULT 0,
    started  TEXT,
    finished TEXT,
    seconds  REAL,
    outputs  TEXT NOT NULL DEFAULT '{}', -- JSON object: output name -> value
    message  TEXT,
    PRIMARY KEY (run_id, step)
);

CREATE TABLE dr_audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    time   TEXT NOT NULL,
    step   TEXT,                       -- null: about the whole run
    event  TEXT NOT NULL,              -- run-started, step-started, step-retry, step-succeeded, step-failed, step-skipped, decision-needed, run-resumed, run-aborted, run-finished
    detail TEXT NOT NULL               -- secrets redacted
);
CREATE INDEX dr_audit_by_run ON dr_audit (run_id, id);
