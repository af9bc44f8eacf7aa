#!/usr/bin/env python3
"""Query benchmark driver: Tally vs DuckDB vs ClickHouse (chdb) on one tenant's events.

Usage (run.sh does all of this):

    bench.py --data-dir DIR --query-bench BIN --work WORKDIR [--runs 5] [--tenant ID]

What it does:

1. Reads the Tally store's manifest (the files Tally itself reads) to find the largest
   tenant and the data set's end ("now" for every engine: the last event + 1 us).
2. Exports that tenant's events (only the columns the five questions read) and its
   identity map (distinct_id -> person_id, from the metadata SQLite) to Parquet, once.
3. Starts three worker processes, each owning one engine so that each one's peak memory
   is its own: `query-bench --serve` (Tally, in-process DataFusion), a DuckDB worker
   (events in a DuckDB database file, its native storage) and a chdb worker (events in a
   MergeTree ordered like PostHog's events table).
4. Runs every question on every engine: one warm-up, then RUNS rounds; within a round
   the engines take turns query by query, so machine noise spreads over all three.
5. Prints medians (ms), each engine's result summary, whether the results agree (and
   where not), and each worker's peak RSS (after loading, and during the queries).

The SQL below asks the same questions as bench/query/queries/*.json, with Tally's
semantics (docs/QUERY-SEMANTICS.md): persons resolved through the identity map (an
unmapped distinct id is its own person), UTC, half-open ranges, top 25 breakdown values
by event count plus "other", ordered funnels whose window is measured from the entry
event (ties in order), first-time weekly retention.
"""

import argparse
import datetime as dt
import glob
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time

DAY = 86_400_000_000
WEEK = 7 * DAY
OTHER = "(other)"
NULL = "(null)"

# ---------------------------------------------------------------------------------------
# Time helpers: every range is computed here once and handed to all engines, so the
# SQL engines and Tally ("last N days" at `now`) agree by construction.


def iso(micros):
    return dt.datetime.fromtimestamp(micros / 1e6, tz=dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S.%f"
    )


def day_label(micros):
    return dt.datetime.fromtimestamp(micros / 1e6, tz=dt.timezone.utc).strftime("%Y-%m-%d")


def ranges(now):
    """Ranges of the five questions at `now` (UTC micros), as Tally resolves them:
    `last N days` = N whole UTC days including today; `last 13 weeks` = 13 whole Monday
    weeks including the current one."""
    today = now // DAY * DAY
    # 1970-01-01 was a Thursday: Monday-based week start.
    monday = today - ((today // DAY + 3) % 7) * DAY
    return {
        "d30_start": today - 29 * DAY,
        "d90_start": today - 89 * DAY,
        "d_end": today + DAY,
        "w13_start": monday - 12 * WEEK,
        "w_end": monday + WEEK,
        "window": 14 * DAY,
        "now": now,
    }


# ---------------------------------------------------------------------------------------
# The questions. Each has its Tally query file, its SQL per engine, and a normaliser
# that turns each engine's answer into one comparable shape.

FUNNEL_STEPS = ["$pageview", "signed_up", "project_created", "invited_teammate"]


def duck_ts(micros):
    return f"TIMESTAMP '{iso(micros)}'"


def ch_ts(micros):
    return f"toDateTime64('{iso(micros)}', 6, 'UTC')"


def top_other_sql(dialect, r, event, value_sql, keys, days_start):
    """Daily values per breakdown combination over [days_start, d_end), with the top 25
    combinations by event count (ties by value ascending) and everything else as one
    "other" row. `keys` are the breakdown columns. Nulls (DuckDB) and empty strings
    (ClickHouse, PostHog-style non-nullable columns) are the null value."""
    ts = duck_ts if dialect == "duckdb" else ch_ts
    if dialect == "duckdb":
        key = " || '\x1f' || ".join(f"coalesce({k}, '{NULL}')" for k in keys)
        day = "strftime(date_trunc('day', timestamp), '%Y-%m-%d')"
        return f"""
WITH e AS (
    SELECT {day} AS d, {key} AS k, {value_sql} AS v
    FROM events
    WHERE event = '{event}' AND timestamp >= {ts(days_start)} AND timestamp < {ts(r['d_end'])}
),
ranked AS (SELECT k, count(*) AS n FROM e GROUP BY k),
top AS (SELECT k FROM ranked ORDER BY n DESC, k ASC LIMIT 25)
SELECT d, CASE WHEN k IN (SELECT k FROM top) THEN k ELSE '{OTHER}' END AS row_key, sum(v) AS value
FROM e GROUP BY ALL ORDER BY d, row_key
"""
    key = "concat(" + ", '\x1f', ".join(f"if({k} = '', '{NULL}', {k})" for k in keys) + ")"
    return f"""
WITH e AS (
    SELECT formatDateTime(toStartOfDay(timestamp), '%Y-%m-%d') AS d, {key} AS k, {value_sql} AS v
    FROM events
    WHERE event = '{event}' AND timestamp >= {ts(days_start)} AND timestamp < {ts(r['d_end'])}
),
top AS (SELECT k FROM e GROUP BY k ORDER BY count() DESC, k ASC LIMIT 25)
SELECT d, if(k IN (SELECT k FROM top), k, '{OTHER}') AS row_key, sum(v) AS value
FROM e GROUP BY d, row_key ORDER BY d, row_key
"""


def person_join(dialect):
    """Events with their resolved person: the identity map's person, else the distinct id."""
    if dialect == "duckdb":
        return (
            "SELECT coalesce(m.person_id, e.distinct_id) AS person, e.timestamp, e.event "
            "FROM events e LEFT JOIN person_map m ON m.distinct_id = e.distinct_id"
        )
    return (
        "SELECT if(m.person_id = '', e.distinct_id, m.person_id) AS person, e.timestamp, e.event "
        "FROM events AS e LEFT JOIN person_map AS m ON m.distinct_id = e.distinct_id"
    )


def sql_trend_country(dialect, r):
    return top_other_sql(dialect, r, "$pageview", "1", ["country"], r["d30_start"])


def sql_sum_by_two(dialect, r):
    return top_other_sql(
        dialect, r, "insight_viewed", "duration_ms", ["country", "device_type"], r["d30_start"]
    )


def sql_dau(dialect, r):
    ts = duck_ts if dialect == "duckdb" else ch_ts
    if dialect == "duckdb":
        return f"""
WITH e AS ({person_join(dialect)}
    WHERE e.timestamp >= {ts(r['d90_start'])} AND e.timestamp < {ts(r['d_end'])})
SELECT strftime(date_trunc('day', timestamp), '%Y-%m-%d') AS d, count(DISTINCT person) AS dau
FROM e GROUP BY d ORDER BY d
"""
    return f"""
SELECT formatDateTime(toStartOfDay(timestamp), '%Y-%m-%d') AS d, uniqExact(person) AS dau
FROM ({person_join(dialect)}
    WHERE e.timestamp >= {ts(r['d90_start'])} AND e.timestamp < {ts(r['d_end'])})
GROUP BY d ORDER BY d
"""


def sql_funnel(dialect, r):
    ts = duck_ts if dialect == "duckdb" else ch_ts
    names = ", ".join(f"'{s}'" for s in FUNNEL_STEPS)
    start, end = r["d90_start"], r["d_end"]
    if dialect == "duckdb":
        # Ordered funnel, window from the entry: for each entry (a step-0 event in the
        # range) the earliest next-step event at or after the previous one (ASOF join)
        # is the best continuation; a person's level is the best over their entries.
        window = f"to_microseconds({r['window']})"
        return f"""
WITH ev AS ({person_join(dialect)}
    WHERE e.timestamp >= {ts(start)} AND e.event IN ({names})),
s0 AS (SELECT person, timestamp AS t0 FROM ev WHERE event = '{FUNNEL_STEPS[0]}' AND timestamp < {ts(end)}),
s1 AS (SELECT person, timestamp AS t FROM ev WHERE event = '{FUNNEL_STEPS[1]}'),
s2 AS (SELECT person, timestamp AS t FROM ev WHERE event = '{FUNNEL_STEPS[2]}'),
s3 AS (SELECT person, timestamp AS t FROM ev WHERE event = '{FUNNEL_STEPS[3]}'),
j1 AS (SELECT s0.person, s0.t0, s1.t AS t1 FROM s0 ASOF LEFT JOIN s1
       ON s0.person = s1.person AND s0.t0 <= s1.t),
j1w AS (SELECT person, t0, CASE WHEN t1 <= t0 + {window} THEN t1 END AS t1 FROM j1),
j2 AS (SELECT j.person, j.t0, j.t1, s2.t AS t2 FROM j1w j ASOF LEFT JOIN s2
       ON j.person = s2.person AND j.t1 <= s2.t),
j2w AS (SELECT person, t0, t1, CASE WHEN t2 <= t0 + {window} THEN t2 END AS t2 FROM j2),
j3 AS (SELECT j.person, j.t0, j.t1, j.t2, s3.t AS t3 FROM j2w j ASOF LEFT JOIN s3
       ON j.person = s3.person AND j.t2 <= s3.t),
levels AS (
    SELECT person, max(1 + (t1 IS NOT NULL)::INT + (t2 IS NOT NULL)::INT
                     + (t3 IS NOT NULL AND t3 <= t0 + {window})::INT) AS level
    FROM j3 GROUP BY person)
SELECT level, count(*) FROM levels GROUP BY level ORDER BY level
"""
    conds = ", ".join(
        [f"event = '{FUNNEL_STEPS[0]}' AND timestamp < {ts(end)}"]
        + [f"event = '{s}'" for s in FUNNEL_STEPS[1:]]
    )
    return f"""
SELECT level, count() FROM (
    SELECT person, windowFunnel({r['window']})(toUInt64(toUnixTimestamp64Micro(timestamp)), {conds}) AS level
    FROM ({person_join(dialect)} WHERE e.timestamp >= {ts(start)} AND e.event IN ({names}))
    GROUP BY person)
WHERE level > 0 GROUP BY level ORDER BY level
"""


def sql_retention(dialect, r):
    ts = duck_ts if dialect == "duckdb" else ch_ts
    start, end = r["w13_start"], r["w_end"]
    if dialect == "duckdb":
        week = "date_trunc('week', {})"
        diff = "(date_diff('day', c.w, a.w) // 7)"
        count = "count(*)"
        label = "strftime(c.w, '%Y-%m-%d')"
    else:
        week = "toMonday({})"
        diff = "intDiv(dateDiff('day', c.w, a.w), 7)"
        count = "count()"
        label = "formatDateTime(c.w, '%Y-%m-%d')"
    # First time: a person's cohort is the week of their first $pageview ever (all the
    # tenant's history), if that is in the range; they return in week n with any event.
    if dialect == "chdb":
        # One pass with arrays (ClickHouse inlines CTEs, so the join form below would
        # read and join the events twice): per person the first start and the set of
        # active weeks, then one row per (cohort, week offset).
        return f"""
SELECT formatDateTime(c, '%Y-%m-%d') AS cohort, n, count() AS persons FROM (
    SELECT minIf(timestamp, event = '$pageview') AS f, toMonday(f) AS c,
           countIf(event = '$pageview') AS starts,
           groupUniqArrayIf(toMonday(timestamp), timestamp >= {ts(start)}) AS weeks
    FROM ({person_join(dialect)})
    GROUP BY person
    HAVING starts > 0 AND f >= {ts(start)} AND f < {ts(end)})
ARRAY JOIN arrayConcat([0], arrayFilter(x -> x >= 1 AND x <= 12,
    arrayMap(w -> intDiv(dateDiff('day', c, w), 7), weeks))) AS n
GROUP BY cohort, n
"""
    return f"""
WITH ev AS ({person_join(dialect)}),
firsts AS (SELECT person, min(timestamp) AS f FROM ev WHERE event = '$pageview' GROUP BY person),
cohorts AS (SELECT person, {week.format('f')} AS w FROM firsts
            WHERE f >= {ts(start)} AND f < {ts(end)}),
active AS (SELECT DISTINCT person, {week.format('timestamp')} AS w FROM ev
           WHERE timestamp >= {ts(start)})
SELECT {label} AS cohort,
       0 AS n, {count} AS persons FROM cohorts c GROUP BY cohort
UNION ALL
SELECT {label} AS cohort,
       {diff} AS n, {count} AS persons
FROM cohorts c JOIN active a ON a.person = c.person
WHERE a.w > c.w AND {diff} <= 12
GROUP BY cohort, n
"""


# Normalised shapes: trends -> {"day|row": value}, DAU -> {"day": value}, funnel ->
# [persons per step], retention -> {"cohort": [values]}; zeros are left out of the dicts
# (Tally zero-fills buckets, SQL returns only what exists).


def tally_breakdown_key(b):
    if b is None:
        return ""
    if b.get("type") == "other":
        return OTHER
    return "\x1f".join(NULL if v is None else str(v) for v in b["values"])


def norm_tally_trends(result, _r):
    cur = result["current"]
    out = {}
    for row in cur["series"]:
        key = tally_breakdown_key(row.get("breakdown"))
        for bucket, value in zip(cur["buckets"], row["values"]):
            if value:
                out[f"{bucket['label']}|{key}" if key else bucket["label"]] = float(value)
    return out


def num(v):
    """A SQL cell as a number (chdb's JSON quotes 64-bit integers; SUM of no values is null)."""
    return 0.0 if v is None else float(v)


def norm_sql_trends(rows, _r):
    return {f"{d}|{k}": num(v) for d, k, v in rows if num(v)}


def norm_sql_dau(rows, _r):
    return {d: num(v) for d, v in rows if num(v)}


def norm_tally_funnel(result, _r):
    return [s["persons"] for s in result["total"]]


def norm_sql_funnel(rows, _r):
    by_level = {int(level): int(n) for level, n in rows}
    return [sum(n for level, n in by_level.items() if level >= k + 1) for k in range(len(FUNNEL_STEPS))]


def norm_tally_retention(result, _r):
    return {c["period"]["label"]: c["values"] for c in result["total"] if c["size"]}


def norm_sql_retention(rows, r):
    cohorts = {}
    for cohort, n, persons in rows:
        cohorts.setdefault(cohort, {})[int(n)] = int(persons)
    out = {}
    for cohort, cells in cohorts.items():
        start = int(dt.datetime.strptime(cohort, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc).timestamp()) * 1_000_000
        values = []
        for n in range(13):
            # A period that starts after now is not yet observable (null), as in Tally.
            values.append(None if start + n * WEEK > r["now"] else cells.get(n, 0))
        out[cohort] = values
    return out


QUERIES = [
    ("1_trend_country", sql_trend_country, norm_tally_trends, norm_sql_trends),
    ("2_dau_90d", sql_dau, norm_tally_trends, norm_sql_dau),
    ("3_funnel_4_steps", sql_funnel, norm_tally_funnel, norm_sql_funnel),
    ("4_retention_weekly", sql_retention, norm_tally_retention, norm_sql_retention),
    ("5_sum_by_two", sql_sum_by_two, norm_tally_trends, norm_sql_trends),
]


def summary(name, value):
    """One line describing a normalised result, for the side-by-side print."""
    if value is None:
        return "(failed)"
    if name.startswith("3_"):
        return "persons per step " + " > ".join(str(v) for v in value)
    if name.startswith("4_"):
        sizes = [v[0] for v in value.values()]
        first = value[min(value)] if value else []
        return f"{len(value)} cohorts, {sum(sizes)} persons; first cohort {first[:5]}..."
    total = sum(value.values())
    rows = {k.split("|", 1)[1] for k in value if "|" in k}
    extra = f", {len(rows)} breakdown rows" if rows else ""
    return f"{len(value)} non-zero cells, total {total:,.0f}{extra}"


def compare(a, b):
    """Differences between two normalised results (empty when they agree)."""
    if isinstance(a, list) or isinstance(b, list):
        return [] if a == b else [f"{a} vs {b}"]
    diffs = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, list) or isinstance(y, list):
            if x != y:
                diffs.append(f"{k}: {x} vs {y}")
        elif x is None or y is None or abs(x - y) > 1e-6 * max(1.0, abs(x), abs(y)):
            diffs.append(f"{k}: {x} vs {y}")
    return diffs


# ---------------------------------------------------------------------------------------
# Workers: one process per engine, a line protocol on stdin/stdout (as query-bench's).


def peak_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def worker(engine, work, now):
    r = ranges(now)
    events = os.path.join(work, "events.parquet")
    person_map = os.path.join(work, "person_map.parquet")
    started = time.time()
    if engine == "duckdb":
        import duckdb

        path = os.path.join(work, "duckdb.db")
        fresh = not os.path.exists(path)
        con = duckdb.connect(path)
        con.execute("SET enable_progress_bar = false")
        con.execute("SET threads = 2")
        con.execute("SET TimeZone = 'UTC'")
        if fresh:
            # Sorted by time, as DuckDB users are advised (zone maps prune ranges).
            # Naive UTC timestamps (PostHog stores UTC too): day and week truncation
            # then need no time-zone arithmetic.
            con.execute(
                f"""CREATE TABLE events AS
                    SELECT * REPLACE (timezone('UTC', timestamp) AS timestamp)
                    FROM read_parquet('{events}') ORDER BY timestamp"""
            )
            con.execute(f"CREATE TABLE person_map AS SELECT * FROM read_parquet('{person_map}')")
            con.execute("CHECKPOINT")

        def run(sql):
            return con.execute(sql).fetchall()

    else:
        from chdb import session

        sess = session.Session(os.path.join(work, "chdb"))
        sess.query(
            """CREATE TABLE IF NOT EXISTS events (
                   uuid String, event String, distinct_id String,
                   timestamp DateTime64(6, 'UTC'),
                   country String, device_type String, duration_ms Nullable(Float64))
               ENGINE = MergeTree
               ORDER BY (toDate(timestamp), event, cityHash64(distinct_id), cityHash64(uuid))"""
        )
        sess.query(
            """CREATE TABLE IF NOT EXISTS person_map (distinct_id String, person_id String)
               ENGINE = MergeTree ORDER BY distinct_id"""
        )
        loaded = int(sess.query("SELECT count() FROM events", "CSV").data().strip() or 0)
        if loaded == 0:
            sess.query(
                f"""INSERT INTO events SELECT uuid, event, distinct_id, timestamp,
                        ifNull(country, ''), ifNull(device_type, ''), duration_ms
                    FROM file('{events}', Parquet)"""
            )
            sess.query(f"INSERT INTO person_map SELECT * FROM file('{person_map}', Parquet)")
            sess.query("OPTIMIZE TABLE events FINAL")

        def run(sql):
            text = sess.query(sql, "JSONCompact").data()
            return json.loads(text)["data"] if text.strip() else []

    print(json.dumps({"ready": True, "load_seconds": time.time() - started, "peak_rss_bytes": peak_rss()}), flush=True)
    sqls = {name: make(engine, r) for name, make, _, _ in QUERIES}
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "quit":
            break
        if cmd == "peak":
            answer = {"peak_rss_bytes": peak_rss()}
        elif cmd == "reset_peak":
            reset_peak()
            answer = {"peak_rss_bytes": peak_rss()}
        elif cmd == "sql":
            answer = {"sql": sqls.get(arg)}
        elif cmd == "run":
            try:
                t = time.perf_counter()
                rows = run(sqls[arg])
                ms = (time.perf_counter() - t) * 1e3
                answer = {"ms": ms, "rows": [list(x) for x in rows]}
            except Exception as e:  # reported to the driver, which shows it
                answer = {"error": f"{type(e).__name__}: {e}"}
        else:
            answer = {"error": f"unknown command {cmd!r}"}
        print(json.dumps(answer, default=str), flush=True)


class Worker:
    def __init__(self, name, argv):
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.hello = self.read()

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker exited (code {self.proc.wait()})")
        return json.loads(line)

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self.proc.wait()


# ---------------------------------------------------------------------------------------
# Preparation: the tenant, "now", and the exported events and identity map.


def read_manifest(data_dir):
    with open(os.path.join(data_dir, "store", "manifest.json")) as f:
        return json.load(f)["files"]


def tenant_files(data_dir, files, tenant):
    paths = []
    for f in files:
        if f["tenant"] != tenant:
            continue
        found = glob.glob(os.path.join(data_dir, "store", "events", f"tenant={tenant}", "*", f"*{f['id']}.parquet"))
        if len(found) != 1:
            raise SystemExit(f"manifest file {f['id']} of tenant {tenant}: found {found}")
        paths.append(found[0])
    return paths


def prepare(args):
    files = read_manifest(args.data_dir)
    per_tenant = {}
    for f in files:
        per_tenant[f["tenant"]] = per_tenant.get(f["tenant"], 0) + f["rows"]
    total = sum(per_tenant.values())
    tenant = args.tenant or max(per_tenant, key=per_tenant.get)
    rows = per_tenant.get(tenant, 0)
    if rows == 0:
        raise SystemExit(f"tenant {tenant} has no stored events")
    now = max(f["max_timestamp"] for f in files if f["tenant"] == tenant) + 1
    store_bytes = sum(f["bytes"] for f in files)
    tenant_bytes = sum(f["bytes"] for f in files if f["tenant"] == tenant)
    info = {
        "tenant": tenant,
        "tenant_events": rows,
        "total_events": total,
        "tenants": len(per_tenant),
        "share_percent": 100.0 * rows / total,
        "now": now,
        "now_iso": iso(now),
        "store_bytes": store_bytes,
        "tenant_store_bytes": tenant_bytes,
    }
    work = args.work
    os.makedirs(work, exist_ok=True)
    stamp = os.path.join(work, "prepared.json")
    if os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f) == info:
                return info
        raise SystemExit(f"{work} was prepared from other data; remove it")
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute("SET TimeZone = 'UTC'")
    paths = tenant_files(args.data_dir, files, tenant)
    file_list = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
    # Only the columns the five questions read; the typed property columns are exactly
    # what Tally reads (prop:str:<key>, prop:num:<key>), absent in a file = null.
    con.execute(
        f"""COPY (
            SELECT uuid, event, distinct_id, timestamp,
                   "prop:str:$geoip_country_code" AS country,
                   "prop:str:$device_type" AS device_type,
                   "prop:num:duration_ms" AS duration_ms
            FROM read_parquet({file_list}, union_by_name = true)
        ) TO '{os.path.join(work, 'events.parquet')}' (FORMAT parquet, COMPRESSION zstd)"""
    )
    meta = sqlite3.connect(f"file:{os.path.join(args.data_dir, 'meta.sqlite')}?mode=ro", uri=True)
    pairs = meta.execute(
        "SELECT distinct_id, person_id FROM person_distinct_ids WHERE tenant_id = ?", (tenant,)
    ).fetchall()
    meta.close()
    import pyarrow as pa

    table = pa.table(
        {"distinct_id": pa.array([p[0] for p in pairs], pa.string()),
         "person_id": pa.array([p[1] for p in pairs], pa.string())}
    )
    con.register("pairs", table)
    con.execute(f"COPY (SELECT * FROM pairs) TO '{os.path.join(work, 'person_map.parquet')}' (FORMAT parquet)")
    info["identity_map_rows"] = len(pairs)
    with open(stamp, "w") as f:
        json.dump({k: v for k, v in info.items() if k != "identity_map_rows"}, f)
    return info


def fmt_bytes(n):
    return "?" if n is None else f"{n / 2**20:,.0f} MiB"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir")
    p.add_argument("--query-bench")
    p.add_argument("--queries", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "queries"))
    p.add_argument("--work")
    p.add_argument("--tenant", type=int)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json-out")
    p.add_argument("--worker", choices=["duckdb", "chdb"])
    p.add_argument("--now", type=int)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.work, args.now)
    if not (args.data_dir and args.query_bench and args.work):
        p.error("--data-dir, --query-bench and --work are required")

    info = prepare(args)
    print(
        f"Data: {info['total_events']:,} events, {info['tenants']} tenants, store {fmt_bytes(info['store_bytes'])}; "
        f"largest tenant {info['tenant']}: {info['tenant_events']:,} events ({info['share_percent']:.1f} %), "
        f"{fmt_bytes(info['tenant_store_bytes'])}; now = {info['now_iso']} UTC",
        flush=True,
    )
    me = [sys.executable, os.path.abspath(__file__), "--work", args.work, "--now", str(info["now"])]
    workers = {}
    workers["tally"] = Worker(
        "tally",
        [args.query_bench, "--serve", "--data-dir", args.data_dir, "--tenant", str(info["tenant"]), "--now", str(info["now"])],
    )
    workers["duckdb"] = Worker("duckdb", me + ["--worker", "duckdb"])
    workers["chdb"] = Worker("chdb", me + ["--worker", "chdb"])
    engines = list(workers)
    load_peak = {e: workers[e].ask("peak")["peak_rss_bytes"] for e in engines}
    for e in engines:
        workers[e].ask("reset_peak")
    times = {(q, e): [] for q, *_ in QUERIES for e in engines}
    results = {}
    errors = {}

    def run(q, e):
        if e == "tally":
            answer = workers[e].ask(f"run {os.path.join(args.queries, q + '.json')}")
        else:
            answer = workers[e].ask(f"run {q}")
        if "error" in answer:
            errors[(q, e)] = answer["error"]
            return None
        _, _, norm_tally, norm_sql = next(x for x in QUERIES if x[0] == q)
        r = ranges(info["now"])
        results[(q, e)] = norm_tally(answer["result"], r) if e == "tally" else norm_sql(answer["rows"], r)
        return answer["ms"]

    for round_ in range(args.runs + 1):  # round 0 is the warm-up
        for q, *_ in QUERIES:
            # Rotate who goes first, so no engine always runs right after another's
            # cache-polluting scan.
            order = engines[round_ % 3 :] + engines[: round_ % 3]
            for e in order:
                ms = run(q, e)
                if round_ > 0 and ms is not None:
                    times[(q, e)].append(ms)
        print(f"round {round_}/{args.runs} done", file=sys.stderr, flush=True)
    query_peak = {e: workers[e].ask("peak")["peak_rss_bytes"] for e in engines}
    sqls = {(q, e): workers[e].ask(f"sql {q}")["sql"] for q, *_ in QUERIES for e in ("duckdb", "chdb")}
    for w in workers.values():
        w.close()

    def med(q, e):
        t = times[(q, e)]
        return statistics.median(t) if t else None

    print()
    print(f"Medians of {args.runs} runs (ms), after one warm-up; engines interleaved query by query:")
    print(f"{'query':<22}{'tally':>10}{'duckdb':>10}{'chdb':>10}   tally vs faster other")
    for q, *_ in QUERIES:
        m = {e: med(q, e) for e in engines}
        others = [m[e] for e in ("duckdb", "chdb") if m[e] is not None]
        ratio = f"{min(others) / m['tally']:.2f}x" if others and m["tally"] else "-"
        cells = "".join(f"{(f'{m[e]:.0f}' if m[e] is not None else 'error'):>10}" for e in engines)
        print(f"{q:<22}{cells}   {ratio}")
    print()
    print("Peak RSS (load / queries): " + ", ".join(f"{e} {fmt_bytes(load_peak[e])} / {fmt_bytes(query_peak[e])}" for e in engines))
    print()
    print("Results:")
    for q, *_ in QUERIES:
        print(f"  {q}")
        for e in engines:
            print(f"    {e:<7} {summary(q, results.get((q, e)))}")
            if (q, e) in errors:
                print(f"            error: {errors[(q, e)][:300]}")
        for e in ("duckdb", "chdb"):
            if (q, e) in results and (q, "tally") in results:
                diffs = compare(results[(q, "tally")], results[(q, e)])
                verdict = "same as tally" if not diffs else f"{len(diffs)} cells differ from tally, e.g. {diffs[:3]}"
                print(f"    {e} vs tally: {verdict}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(
                {
                    "data": info,
                    "runs": args.runs,
                    "times_ms": {f"{q}/{e}": t for (q, e), t in times.items()},
                    "medians_ms": {f"{q}/{e}": med(q, e) for q, *_ in QUERIES for e in engines},
                    "peak_rss_bytes": {"load": load_peak, "queries": query_peak},
                    "errors": {f"{q}/{e}": v for (q, e), v in errors.items()},
                    "results": {f"{q}/{e}": v for (q, e), v in results.items()},
                    "sql": {f"{q}/{e}": v for (q, e), v in sqls.items()},
                },
                f,
                indent=1,
                default=str,
            )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
