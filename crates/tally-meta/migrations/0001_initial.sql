-- Tally metadata schema, version 1.
--
-- Portability: written for SQLite but kept close to what PostgreSQL accepts, so the
-- distributed mode can reuse it with small edits: timestamps are BIGINT microseconds
-- since the Unix epoch (UTC), JSON is TEXT, UUIDs are lower-case hyphenated TEXT (which
-- sorts like the UUID bytes, so UUIDv7 person ids sort by creation time), booleans are
-- 0/1 integers. The SQLite-only parts are `INTEGER PRIMARY KEY AUTOINCREMENT`
-- (PostgreSQL: `BIGINT GENERATED ALWAYS AS IDENTITY`).

-- Tenants. `write_key` is public (it ships inside browser bundles) and stored as is;
-- the secret read key is stored only as its SHA-256 hex digest.
CREATE TABLE tenants (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT    NOT NULL UNIQUE,
    write_key       TEXT    NOT NULL UNIQUE,
    secret_key_hash TEXT    NOT NULL UNIQUE,
    timezone        TEXT    NOT NULL DEFAULT 'UTC',
    created_at      BIGINT  NOT NULL
);

CREATE TABLE tenant_attributes (
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    key       TEXT   NOT NULL,
    value     TEXT   NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

-- Operator keys may query across tenants; stored only as SHA-256 hex digests.
CREATE TABLE operator_keys (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    label      TEXT    NOT NULL,
    key_hash   TEXT    NOT NULL UNIQUE,
    created_at BIGINT  NOT NULL
);

-- The log position through which identity effects have been applied. One row: the
-- watermark belongs to the store, not to a tenant, because the log is shared.
CREATE TABLE identity_watermark (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    applied_lsn BIGINT  NOT NULL
);
INSERT INTO identity_watermark (id, applied_lsn) VALUES (1, 0);

-- The identity tables deliberately have no foreign key to `tenants`: the event log is
-- the source of truth, and a replay must never fail because of metadata it predates.
CREATE TABLE persons (
    tenant_id     BIGINT  NOT NULL,
    id            TEXT    NOT NULL,
    properties    TEXT    NOT NULL,
    is_identified INTEGER NOT NULL,
    created_at    BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE person_distinct_ids (
    tenant_id   BIGINT NOT NULL,
    distinct_id TEXT   NOT NULL,
    person_id   TEXT   NOT NULL,
    PRIMARY KEY (tenant_id, distinct_id)
);
CREATE INDEX person_distinct_ids_by_person ON person_distinct_ids (tenant_id, person_id);

-- A person merged away keeps resolving: merged_id -> the person that absorbed it.
-- Chains are collapsed on write, so one lookup always reaches a live person.
CREATE TABLE person_merges (
    tenant_id   BIGINT NOT NULL,
    merged_id   TEXT   NOT NULL,
    survivor_id TEXT   NOT NULL,
    merged_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, merged_id)
);
CREATE INDEX person_merges_by_survivor ON person_merges (tenant_id, survivor_id);

-- Bumped whenever a tenant's distinct_id -> person mapping changes, so readers can
-- cache the mapping and cheaply tell when it went stale.
CREATE TABLE identity_versions (
    tenant_id BIGINT NOT NULL PRIMARY KEY,
    version   BIGINT NOT NULL
);

-- Group types in first-seen order; `type_index` is PostHog's `$group_N` slot.
CREATE TABLE group_types (
    tenant_id  BIGINT NOT NULL,
    group_type TEXT   NOT NULL,
    type_index BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, group_type)
);

CREATE TABLE groups (
    tenant_id  BIGINT NOT NULL,
    group_type TEXT   NOT NULL,
    group_key  TEXT   NOT NULL,
    properties TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, group_type, group_key)
);
