-- schema
SELECT v_s, v_n, v_b, v_o, CAST(COUNT(*) AS BIGINT) AS row_count FROM (SELECT e."prop:str:plan" AS v_s, CAST(NULL AS DOUBLE) AS v_n, CAST(NULL AS BOOLEAN) AS v_b, CAST(NULL AS VARCHAR) AS v_o FROM tenant_7_events AS e WHERE e."event" = '$pageview') t WHERE v_s IS NOT NULL GROUP BY v_s, v_n, v_b, v_o;
