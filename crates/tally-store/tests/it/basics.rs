use arrow::array::{Array, Float64Array, Int64Array, StringArray};
use serde_json::json;
use tally_core::time::now_micros;
use tally_store::{EmbeddedStore, PropertyType};

use crate::*;

async fn sql_i64(store: &EmbeddedStore, tenant: tally_core::TenantId, sql: &str) -> i64 {
    let ctx = store.session_context_for(tenant).unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let col = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    col.value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_events_are_queryable_at_once_and_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    let input = events(0..100);
    let outcome = store.apply(1, &batch(T1, input.clone())).unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (100, 0));
    assert_eq!(store.count_events(T1).await.unwrap(), 100);
    let mut expected = input.clone();
    expected.sort_by_key(|e| (e.timestamp, e.uuid));
    assert_eq!(store.scan_events(T1).await.unwrap(), expected);
    assert!(store.buffered_bytes() > 0);
    assert_eq!(store.durable_lsn(), 0);

    let report = store.flush().await.unwrap();
    assert_eq!(report.rows, 100);
    assert_eq!(store.durable_lsn(), 1);
    assert_eq!(store.buffered_bytes(), 0);
    assert_eq!(store.scan_events(T1).await.unwrap(), expected);
    // Layout: DIR/events/tenant=<id>/month=YYYY-MM/L0-<id>.parquet
    for f in store.files(T1) {
        let path = dir.path().join(f.relative_path(store.config().granularity));
        assert!(path.is_file(), "{}", path.display());
        assert!(path.to_str().unwrap().contains("/events/tenant=1/month="));
        assert_eq!(f.level, 0);
    }
    // Re-applying a durable lsn is a no-op.
    assert!(store.apply(1, &batch(T1, input)).unwrap().already_durable);
    assert_eq!(store.count_events(T1).await.unwrap(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_changing_property_is_readable_in_both_typed_columns() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    let mut a = event(1, now_micros());
    a.properties.insert("amount".into(), json!(12.5));
    let mut b = event(2, now_micros());
    b.properties.insert("amount".into(), json!("twelve"));
    let mut c = event(3, now_micros());
    c.properties
        .insert("amount".into(), json!({"nested": true}));
    store.apply(1, &batch(T1, vec![a])).unwrap();
    store.flush().await.unwrap();
    store.apply(2, &batch(T1, vec![b, c])).unwrap(); // one in a file, two in the buffer

    let catalog = store.property_catalog(T1);
    let amount = &catalog.keys["amount"];
    assert!(amount.materialized);
    assert_eq!((amount.number, amount.string, amount.other), (1, 1, 1));
    for ty in [PropertyType::Num, PropertyType::Str] {
        assert!(
            catalog
                .property_columns()
                .contains(&tally_store::property_column("amount", ty))
        );
    }

    let ctx = store.session_context_for(T1).unwrap();
    let rows = ctx
        .sql(r#"SELECT "prop:num:amount", "prop:str:amount" FROM events ORDER BY uuid"#)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let batch = arrow::compute::concat_batches(&rows[0].schema(), &rows).unwrap();
    let num = batch
        .column(0)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    let text = batch
        .column(1)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(num.value(0), 12.5);
    assert!(num.is_null(1) && num.is_null(2));
    assert!(text.is_null(0) && text.is_null(2));
    assert_eq!(text.value(1), "twelve");
    assert_eq!(
        sql_i64(
            &store,
            T1,
            r#"SELECT count(*) FROM events WHERE "prop:str:amount" = 'twelve'"#
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_see_each_others_rows_or_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    let mut secret = event(1, now_micros());
    secret.properties.insert("t2_only".into(), json!("x"));
    store.apply(1, &batch(T1, events(0..10))).unwrap();
    // The same uuids in another tenant are different events, not duplicates.
    store.apply(2, &batch(T2, events(0..10))).unwrap();
    store.apply(3, &batch(T2, vec![secret])).unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.count_events(T1).await.unwrap(), 10);
    assert_eq!(
        store.count_events(T2).await.unwrap(),
        10,
        "uuid 1 is a duplicate within T2"
    );
    assert!(!store.property_catalog(T1).keys.contains_key("t2_only"));
    let t1_schema = store.events_table(T1).unwrap();
    use datafusion::catalog::TableProvider;
    assert!(
        t1_schema
            .schema()
            .field_with_name("prop:str:t2_only")
            .is_err()
    );
    assert_eq!(
        store.count_events(tally_core::TenantId(3)).await.unwrap(),
        0
    );
    assert!(store.files(T1).iter().all(|f| f.tenant == T1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_filters_prune_and_stay_correct() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.granularity = tally_store::PartitionGranularity::Day;
    let store = EmbeddedStore::open(cfg).await.unwrap();
    let now = now_micros();
    let day = tally_core::time::MICROS_PER_DAY;
    let input: Vec<_> = (0..60u128)
        .map(|n| event(n, now - (n as i64 % 6) * day))
        .collect();
    store.apply(1, &batch(T1, input.clone())).unwrap();
    store.flush().await.unwrap();
    assert!(store.files(T1).len() >= 6, "one file per day partition");
    let cutoff = now - 2 * day - day / 2;
    let expected = input.iter().filter(|e| e.timestamp >= cutoff).count() as i64;
    let filter =
        format!("timestamp >= arrow_cast({cutoff}, 'Timestamp(Microsecond, Some(\"UTC\"))')");
    let sql = format!("SELECT count(*) FROM events WHERE {filter}");
    assert_eq!(sql_i64(&store, T1, &sql).await, expected);
    // Only the files of the last three days are scanned.
    let ctx = store.session_context_for(T1).unwrap();
    let plan = ctx
        .sql(&format!("EXPLAIN SELECT uuid FROM events WHERE {filter}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut text = String::new();
    for b in &plan {
        let col = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8).unwrap();
        let col = col.as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..col.len() {
            text.push_str(col.value(i));
        }
    }
    let scanned = text.matches(".parquet").count();
    assert!(
        (1..=3).contains(&scanned),
        "scanned {scanned} files: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_encoded_stores_the_given_properties_text_and_checks_its_length() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).await.unwrap();
    let mut input = events(0..3);
    for (i, e) in input.iter_mut().enumerate() {
        e.properties.insert("n".into(), json!(i));
        e.properties.insert("s".into(), json!(format!("v\"{i}")));
    }
    let texts: Vec<String> = input
        .iter()
        .map(|e| serde_json::to_string(&e.properties).unwrap())
        .collect();
    // One text too few is a caller bug: refused, nothing stored.
    let err = store
        .apply_encoded(1, batch(T1, input.clone()), texts[..2].to_vec())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("2 serialised property maps for 3 events"),
        "{err}"
    );
    assert_eq!(store.count_events(T1).await.unwrap(), 0);

    let outcome = store
        .apply_encoded(1, batch(T1, input.clone()), texts.clone())
        .unwrap();
    assert_eq!(outcome.inserted, 3);
    let mut expected = input.clone();
    expected.sort_by_key(|e| (e.timestamp, e.uuid));
    // Buffered, then from Parquet: the properties column holds the given text, and
    // the typed columns are derived from the maps as usual.
    for flushed in [false, true] {
        if flushed {
            store.flush().await.unwrap();
        }
        assert_eq!(store.scan_events(T1).await.unwrap(), expected);
        let ctx = store.session_context_for(T1).unwrap();
        let rows = ctx
            .sql(r#"SELECT properties, "prop:num:n" FROM events ORDER BY "prop:num:n""#)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = rows[0]
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let n = rows[0]
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        for (i, expected_text) in texts.iter().enumerate() {
            assert_eq!(text.value(i), expected_text);
            assert_eq!(n.value(i), i as f64);
        }
    }
}
