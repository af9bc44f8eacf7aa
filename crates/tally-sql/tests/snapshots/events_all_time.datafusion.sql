-- page
SELECT tally_uuid_text(e."uuid") AS row_uuid, e."event" AS row_event, e."distinct_id" AS row_distinct_id, coalesce(pm."person_id", e."distinct_id") AS row_person_id, CAST(e."timestamp" AS BIGINT) AS row_ts, e."properties" AS row_properties FROM tenant_7_events AS e LEFT JOIN tenant_7_person_map AS pm ON pm."distinct_id" = e."distinct_id" ORDER BY row_ts DESC, row_uuid DESC LIMIT 101;
