-- schema
SELECT e."event" AS row_name, CAST(COUNT(*) AS BIGINT) AS row_count, MAX(CAST(e."timestamp" AS BIGINT)) AS row_last_seen FROM tenant_7_events AS e WHERE e."timestamp" >= to_timestamp_micros(1702335600000000) AND e."timestamp" < to_timestamp_micros(1704927600000000) AND (strpos(lower(e."event"), lower('Sign''up')) > 0) GROUP BY e."event" ORDER BY row_count DESC, row_name ASC LIMIT 20;
