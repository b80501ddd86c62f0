-- v2: a tenant's rows are keyed by its repository as well as its name (`repo`: the
-- repository's canonical location), so two configs with a tenant of the same name on
-- different repositories never share history, points or alert state. Rows written
-- before v2 get repo '' and are adopted by the first daemon that binds their tenant.
ALTER TABLE jobs ADD COLUMN repo TEXT NOT NULL DEFAULT '';
DROP INDEX jobs_by_tenant;
CREATE INDEX jobs_by_tenant ON jobs (tenant, repo, id);

CREATE TABLE points_v2 (
    tenant      TEXT NOT NULL,
    repo        TEXT NOT NULL,
    id          TEXT NOT NULL,
    started     TEXT NOT NULL,
    finished    TEXT NOT NULL,
    status      TEXT NOT NULL,
    components  TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    bytes_added INTEGER NOT NULL,
    seconds     REAL NOT NULL,
    source      TEXT NOT NULL,
    PRIMARY KEY (tenant, repo, id)
);
INSERT INTO points_v2 (tenant, repo, id, started, finished, status, components, bytes,
                       bytes_added, seconds, source)
    SELECT tenant, '', id, started, finished, status, components, bytes, bytes_added,
           seconds, source FROM points;
DROP TABLE points;
ALTER TABLE points_v2 RENAME TO points;
CREATE INDEX points_by_time ON points (tenant, repo, started);

ALTER TABLE verifies ADD COLUMN repo TEXT NOT NULL DEFAULT '';
DROP INDEX verifies_by_tenant;
CREATE INDEX verifies_by_tenant ON verifies (tenant, repo, time);

-- Alert keys are KIND:TENANT or KIND:TENANT:DETAIL; the tenant gets a column.
CREATE TABLE alerts_v2 (
    tenant      TEXT NOT NULL,
    repo        TEXT NOT NULL,
    key         TEXT NOT NULL,
    state       TEXT NOT NULL,
    first_fired TEXT NOT NULL,
    last_sent   TEXT,
    resolved_at TEXT,
    message     TEXT NOT NULL,
    PRIMARY KEY (repo, key)
);
INSERT INTO alerts_v2 (tenant, repo, key, state, first_fired, last_sent, resolved_at, message)
    SELECT CASE WHEN instr(rest, ':') > 0 THEN substr(rest, 1, instr(rest, ':') - 1)
                ELSE rest END,
           '', key, state, first_fired, last_sent, resolved_at, message
    FROM (SELECT *, substr(key, instr(key, ':') + 1) AS rest FROM alerts);
DROP TABLE alerts;
ALTER TABLE alerts_v2 RENAME TO alerts;

-- A tenant's own settings (first_seen, last_slot:KIND, retries, points_refreshed) leave
-- `meta`, which keeps what concerns the whole catalog.
CREATE TABLE tenant_meta (
    tenant TEXT NOT NULL,
    repo   TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (tenant, repo, key)
);
INSERT INTO tenant_meta (tenant, repo, key, value)
    SELECT substr(key, instr(key, ':') + 1), '', substr(key, 1, instr(key, ':') - 1), value
    FROM meta
    WHERE key LIKE 'first\_seen:%' ESCAPE '\' OR key LIKE 'retries:%'
       OR key LIKE 'points\_refreshed:%' ESCAPE '\';
INSERT INTO tenant_meta (tenant, repo, key, value)
    SELECT substr(rest, instr(rest, ':') + 1), '', 'last_slot:' || substr(rest, 1, instr(rest, ':') - 1), value
    FROM (SELECT *, substr(key, 11) AS rest FROM meta WHERE key LIKE 'last\_slot:%:%' ESCAPE '\');
DELETE FROM meta
    WHERE key LIKE 'first\_seen:%' ESCAPE '\' OR key LIKE 'retries:%'
       OR key LIKE 'points\_refreshed:%' ESCAPE '\' OR key LIKE 'last\_slot:%:%' ESCAPE '\';
