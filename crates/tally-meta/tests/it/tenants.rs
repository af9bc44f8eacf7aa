//! Tenants, keys and the cached write-key directory.

use std::sync::Arc;
use std::time::Duration;

use tally_core::{Classify, ErrorClass, TenantDirectory, TenantId};
use tally_meta::{CachedMeta, Error, KeyKind, MetaStore, SqliteMeta};

use crate::open_temp;

#[tokio::test]
async fn a_created_tenant_is_found_by_name_id_and_keys() {
    let (_dir, meta) = open_temp().await;
    let created = meta.create_tenant("acme").await.unwrap();
    let tenant = &created.tenant;
    assert_eq!(tenant.name, "acme");
    assert_eq!(tenant.timezone, "UTC");
    assert!(tenant.attributes.is_empty());
    assert!(KeyKind::Write.matches_format(&tenant.write_key));
    assert!(KeyKind::Secret.matches_format(&created.secret_key));

    assert_eq!(
        meta.tenant_by_name("acme").await.unwrap().as_ref(),
        Some(tenant)
    );
    assert_eq!(
        meta.tenant_by_id(tenant.id).await.unwrap().as_ref(),
        Some(tenant)
    );
    assert_eq!(
        meta.tenant_by_write_key(&tenant.write_key).await.unwrap(),
        Some(tenant.id)
    );
    assert_eq!(
        meta.tenant_for_secret_key(&created.secret_key)
            .await
            .unwrap(),
        Some(tenant.id)
    );
    // The public key is not a secret key, and an unknown secret finds nobody.
    assert_eq!(
        meta.tenant_for_secret_key(&tenant.write_key).await.unwrap(),
        None
    );
    assert_eq!(
        meta.tenant_for_secret_key(&KeyKind::Secret.generate())
            .await
            .unwrap(),
        None
    );
    assert_eq!(meta.tenant_by_name("other").await.unwrap(), None);
    assert_eq!(meta.tenant_by_id(TenantId(999)).await.unwrap(), None);

    let second = meta.create_tenant("beta").await.unwrap();
    assert_ne!(second.tenant.id, tenant.id);
    assert_ne!(second.tenant.write_key, tenant.write_key);
    let names: Vec<_> = meta
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["acme", "beta"]);
}

#[tokio::test]
async fn the_secret_key_is_stored_only_as_a_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let meta = SqliteMeta::open(&path).await.unwrap();
    let created = meta.create_tenant("acme").await.unwrap();
    let op_key = meta.create_operator_key("ci").await.unwrap();
    meta.close().await;
    for file in std::fs::read_dir(dir.path()).unwrap() {
        // SQLite may still be removing its -wal/-shm files as the last connection
        // closes; a file gone by now was checkpointed into the database, read here.
        let bytes = match std::fs::read(file.unwrap().path()) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("reading a database file: {e}"),
        };
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&created.secret_key));
        assert!(!text.contains(&op_key));
    }
}

#[tokio::test]
async fn bad_and_duplicate_names_are_refused() {
    let (_dir, meta) = open_temp().await;
    meta.create_tenant("acme").await.unwrap();
    let err = meta.create_tenant("acme").await.unwrap_err();
    assert!(matches!(err, Error::TenantAlreadyExists { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::BadRequest);
    for bad in ["", "Acme", "-acme", "acme corp", &"a".repeat(64)] {
        let err = meta.create_tenant(bad).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidTenantName { .. }),
            "{bad}: {err}"
        );
    }
    assert_eq!(meta.list_tenants().await.unwrap().len(), 1);
}

#[tokio::test]
async fn attributes_and_time_zone_are_updated() {
    let (_dir, meta) = open_temp().await;
    let id = meta.create_tenant("acme").await.unwrap().tenant.id;
    let set = vec![
        ("plan".to_string(), "pro".to_string()),
        ("owner".to_string(), "ops@example.com".to_string()),
    ];
    let t = meta.set_tenant_attributes(id, &set, &[]).await.unwrap();
    assert_eq!(t.attributes.get("plan").map(String::as_str), Some("pro"));
    assert_eq!(t.attributes.len(), 2);

    let t = meta
        .set_tenant_attributes(
            id,
            &[("plan".to_string(), "enterprise".to_string())],
            &["owner".to_string(), "never-set".to_string()],
        )
        .await
        .unwrap();
    assert_eq!(t.attributes.len(), 1);
    assert_eq!(t.attributes["plan"], "enterprise");
    assert_eq!(meta.tenant_by_id(id).await.unwrap().unwrap(), t);
    assert_eq!(meta.list_tenants().await.unwrap(), vec![t.clone()]);

    let both = meta
        .set_tenant_attributes(id, &[("a".into(), "1".into())], &["a".into()])
        .await
        .unwrap_err();
    assert!(matches!(both, Error::InvalidAttribute { .. }), "{both}");

    let t = meta.set_tenant_timezone(id, "Europe/Berlin").await.unwrap();
    assert_eq!(t.timezone, "Europe/Berlin");
    assert_eq!(t.attributes["plan"], "enterprise");
    let err = meta
        .set_tenant_timezone(id, "Mars/Olympus")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTimezone { .. }), "{err}");
    assert_eq!(
        meta.tenant_by_id(id).await.unwrap().unwrap().timezone,
        "Europe/Berlin"
    );

    let missing = TenantId(4242);
    for err in [
        meta.set_tenant_timezone(missing, "UTC").await.unwrap_err(),
        meta.set_tenant_attributes(missing, &set, &[])
            .await
            .unwrap_err(),
        meta.rotate_secret_key(missing).await.unwrap_err(),
    ] {
        assert!(
            matches!(err, Error::TenantNotFound(TenantId(4242))),
            "{err}"
        );
        assert_eq!(err.class(), ErrorClass::NotFound);
    }
}

#[tokio::test]
async fn rotating_the_secret_key_revokes_the_old_one() {
    let (_dir, meta) = open_temp().await;
    let created = meta.create_tenant("acme").await.unwrap();
    let id = created.tenant.id;
    let new_secret = meta.rotate_secret_key(id).await.unwrap();
    assert_ne!(new_secret, created.secret_key);
    assert_eq!(
        meta.tenant_for_secret_key(&created.secret_key)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        meta.tenant_for_secret_key(&new_secret).await.unwrap(),
        Some(id)
    );
    // The write key is unaffected.
    assert_eq!(
        meta.tenant_by_write_key(&created.tenant.write_key)
            .await
            .unwrap(),
        Some(id)
    );
}

#[tokio::test]
async fn operator_keys_verify_only_when_issued() {
    let (_dir, meta) = open_temp().await;
    let key = meta.create_operator_key("grafana").await.unwrap();
    assert!(KeyKind::Operator.matches_format(&key));
    assert!(meta.verify_operator_key(&key).await.unwrap());
    assert!(
        !meta
            .verify_operator_key(&KeyKind::Operator.generate())
            .await
            .unwrap()
    );
    assert!(!meta.verify_operator_key("").await.unwrap());
    let secret = meta.create_tenant("acme").await.unwrap().secret_key;
    assert!(!meta.verify_operator_key(&secret).await.unwrap());
    let err = meta.create_operator_key("  ").await.unwrap_err();
    assert!(matches!(err, Error::InvalidLabel { .. }), "{err}");
}

#[tokio::test]
async fn operator_keys_are_listed_and_revoked_one_by_one() {
    let (_dir, meta) = open_temp().await;
    assert!(meta.list_operator_keys().await.unwrap().is_empty());
    let grafana = meta.create_operator_key("grafana").await.unwrap();
    let alice = meta.create_operator_key("alice").await.unwrap();
    let listed = meta.list_operator_keys().await.unwrap();
    let labels: Vec<&str> = listed.iter().map(|k| k.label.as_str()).collect();
    assert_eq!(labels, ["grafana", "alice"]);
    // Nothing listed reveals a key.
    let shown = serde_json::to_string(&listed).unwrap();
    assert!(
        !shown.contains(&grafana) && !shown.contains(&alice),
        "{shown}"
    );

    let revoked = meta.revoke_operator_key(listed[0].id).await.unwrap();
    assert_eq!(revoked.as_ref(), Some(&listed[0]));
    assert!(!meta.verify_operator_key(&grafana).await.unwrap());
    assert!(meta.verify_operator_key(&alice).await.unwrap());
    assert_eq!(
        meta.list_operator_keys().await.unwrap(),
        vec![listed[1].clone()]
    );
    // Revoking again, or an id never issued, finds nothing.
    assert_eq!(meta.revoke_operator_key(listed[0].id).await.unwrap(), None);
    assert_eq!(meta.revoke_operator_key(999).await.unwrap(), None);
}

#[tokio::test]
async fn tenants_survive_reopening_and_new_ids_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let meta = SqliteMeta::open(&path).await.unwrap();
    let first = meta.create_tenant("acme").await.unwrap();
    meta.close().await;

    let meta = SqliteMeta::open(&path).await.unwrap();
    assert_eq!(
        meta.tenant_by_name("acme").await.unwrap().unwrap(),
        first.tenant
    );
    let second = meta.create_tenant("beta").await.unwrap();
    assert!(second.tenant.id > first.tenant.id);
}

#[tokio::test]
async fn opening_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteMeta::open(&dir.path().join("missing/meta.db"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");

    // A database written by a newer Tally is refused rather than misread.
    let path = dir.path().join("meta.db");
    SqliteMeta::open(&path).await.unwrap().close().await;
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO tally_meta_schema (version, name, applied_at) VALUES (99, 'future', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let err = SqliteMeta::open(&path).await.unwrap_err();
    assert!(
        matches!(err, Error::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
}

/// `tally tenant create` runs in another process while `tally serve` has the database
/// open: two independent pools on one file stand in for the two processes.
#[tokio::test]
async fn the_directory_sees_tenants_created_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let server = SqliteMeta::open(&path).await.unwrap();
    let existing = server.create_tenant("existing").await.unwrap().tenant;

    let directory = CachedMeta::with_negative_ttl(Arc::new(server.clone()), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        directory.tenant_for_write_key(&existing.write_key).await,
        Some(existing.id)
    );

    let cli = SqliteMeta::open(&path).await.unwrap();
    let created = cli.create_tenant("from-cli").await.unwrap().tenant;
    cli.close().await;
    assert_eq!(
        directory.tenant_for_write_key(&created.write_key).await,
        Some(created.id)
    );

    // Created through the wrapper: known without a lookup.
    let local = directory.create_tenant("local").await.unwrap().tenant;
    assert_eq!(
        directory.tenant_for_write_key(&local.write_key).await,
        Some(local.id)
    );
    assert_eq!(directory.tenant_for_write_key("tly_pub_nope").await, None);
}

#[tokio::test]
async fn concurrent_writers_in_two_processes_do_not_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let a = SqliteMeta::open(&path).await.unwrap();
    let b = SqliteMeta::open(&path).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let t = store.create_tenant(&format!("t{i}")).await?;
            store
                .set_tenant_attributes(t.tenant.id, &[("n".into(), i.to_string())], &[])
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let tenants = a.list_tenants().await.unwrap();
    assert_eq!(tenants.len(), 20);
    assert!(tenants.iter().all(|t| t.attributes.len() == 1));
}
