-- Tally metadata schema, version 2: a per-tenant version of the persons themselves.
--
-- Bumped in the same transaction as any change to a tenant's persons (created, merged
-- away, properties changed), so the query engine can cache the persons relation and
-- rebuild it only when this value moves. Separate from `identity_versions`, which moves
-- only with the distinct id mapping: most property updates leave the mapping alone.
CREATE TABLE person_versions (
    tenant_id BIGINT NOT NULL PRIMARY KEY,
    version   BIGINT NOT NULL
);
