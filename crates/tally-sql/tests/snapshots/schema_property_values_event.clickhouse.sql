-- schema
SELECT v_s, v_n, v_b, v_o, CAST(COUNT(*) AS BIGINT) AS row_count FROM (SELECT e.`prop:str:plan` AS v_s, CAST(NULL AS Nullable(Float64)) AS v_n, CAST(NULL AS Nullable(Bool)) AS v_b, CAST(NULL AS Nullable(String)) AS v_o FROM events AS e WHERE e.tenant_id = 7 AND e.`event` = '$pageview') t WHERE v_s IS NOT NULL GROUP BY v_s, v_n, v_b, v_o SETTINGS join_use_nulls = 1;
