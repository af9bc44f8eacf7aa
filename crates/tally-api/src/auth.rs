//! Who is asking: resolving `Authorization: Bearer <key>` to a [`Principal`], and the
//! scope rule that follows from it.
//!
//! A tenant's secret key (`tly_sec_...`) reads that tenant only; an operator key
//! (`tly_op_...`) may read any tenant, use operator (cross-tenant) scopes and list
//! tenants. Keys are checked against the metadata store (hashed lookups) once per
//! HTTP request. Does not own key formats or storage (tally-meta).

use serde_json::{Map, Value, json};
use tally_meta::{KeyKind, MetaStore};
use tally_query::Scope;

use crate::error::{Error, Result};

/// The holder of a valid key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// A tenant's secret key: that tenant's data only.
    Tenant(tally_core::TenantId),
    /// An operator key: every tenant, operator scopes, the tenant list.
    Operator,
}

/// Resolves the `Authorization` header's value.
pub async fn authenticate(meta: &dyn MetaStore, authorization: Option<&str>) -> Result<Principal> {
    let Some(header) = authorization else {
        return Err(Error::Unauthenticated(
            "no API key: send `Authorization: Bearer <key>` with the tenant's secret key (tly_sec_...) or an operator key (tly_op_...)".into(),
        ));
    };
    let key = match header.trim().split_once(' ') {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key.trim(),
        _ => {
            return Err(Error::Unauthenticated(
                "the Authorization header must be `Bearer <key>`".into(),
            ));
        }
    };
    if KeyKind::Secret.matches_format(key) {
        if let Some(tenant) = meta.tenant_for_secret_key(key).await? {
            return Ok(Principal::Tenant(tenant));
        }
    } else if KeyKind::Operator.matches_format(key) {
        if meta.verify_operator_key(key).await? {
            return Ok(Principal::Operator);
        }
    } else if KeyKind::Write.matches_format(key) {
        return Err(Error::Unauthenticated(
            "this is a public write key (tly_pub_...), which can only send events; queries need the tenant's secret key (tly_sec_...)".into(),
        ));
    }
    Err(Error::Unauthenticated(
        "the API key is not valid: it may have been rotated, or it belongs to another installation"
            .into(),
    ))
}

/// Sets the scope of a query (a JSON object, before it is parsed) from the
/// principal: a tenant key's queries read its tenant whether or not they say so, and
/// naming any other scope is refused; an operator must say which scope it reads.
pub fn apply_scope(principal: Principal, query: &mut Map<String, Value>) -> Result<()> {
    let written = query.get("scope").filter(|v| !v.is_null());
    match principal {
        Principal::Tenant(tenant) => {
            if let Some(written) = written {
                let scope: Scope = serde_json::from_value(written.clone()).map_err(|e| {
                    Error::BadRequest(format!("invalid `scope`: {e}; it may be omitted"))
                })?;
                if scope != Scope::Tenant(tenant) {
                    return Err(Error::Forbidden(format!(
                        "this secret key reads tenant {tenant} only, but the query's scope is {}; omit `scope` or use {{\"tenant\": {tenant}}}",
                        serde_json::to_string(written).unwrap_or_default()
                    )));
                }
            }
            query.insert("scope".into(), json!({ "tenant": tenant.0 }));
            Ok(())
        }
        Principal::Operator => {
            if written.is_none() {
                return Err(Error::BadRequest(
                    "an operator key reads any tenant, so the query must name its `scope`: {\"tenant\": <id>} or {\"operator\": {\"tenants\": {...}}}".into(),
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use tally_core::{Classify, ErrorClass, TenantId};
    use tally_meta::SqliteMeta;

    use super::*;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn tenant_keys_get_their_scope_and_nothing_else() {
        let me = Principal::Tenant(TenantId(3));
        let mut q = object(json!({"series": []}));
        apply_scope(me, &mut q).unwrap();
        assert_eq!(q["scope"], json!({"tenant": 3}));

        let mut q = object(json!({"scope": {"tenant": 3}}));
        apply_scope(me, &mut q).unwrap();
        let mut q = object(json!({"scope": null}));
        apply_scope(me, &mut q).unwrap();
        assert_eq!(q["scope"], json!({"tenant": 3}));

        for other in [json!({"tenant": 4}), json!({"operator": {}})] {
            let mut q = object(json!({ "scope": other }));
            let e = apply_scope(me, &mut q).unwrap_err();
            assert_eq!(e.class(), ErrorClass::Forbidden, "{e}");
            assert!(e.to_string().contains("tenant 3 only"), "{e}");
        }
        let mut q = object(json!({"scope": "everything"}));
        assert_eq!(
            apply_scope(me, &mut q).unwrap_err().class(),
            ErrorClass::BadRequest
        );
    }

    #[test]
    fn operators_must_name_a_scope() {
        let mut q = object(json!({}));
        let e = apply_scope(Principal::Operator, &mut q).unwrap_err();
        assert_eq!(e.class(), ErrorClass::BadRequest);
        let mut q = object(json!({"scope": {"operator": {}}}));
        apply_scope(Principal::Operator, &mut q).unwrap();
        assert_eq!(q["scope"], json!({"operator": {}}));
    }

    #[tokio::test]
    async fn keys_resolve_to_principals() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqliteMeta::open(&dir.path().join("meta.db")).await.unwrap();
        let created = meta.create_tenant("acme").await.unwrap();
        let operator = meta.create_operator_key("staff").await.unwrap();

        let bearer = |k: &str| format!("Bearer {k}");
        assert_eq!(
            authenticate(&meta, Some(&bearer(&created.secret_key)))
                .await
                .unwrap(),
            Principal::Tenant(created.tenant.id)
        );
        assert_eq!(
            authenticate(&meta, Some(&format!("bearer  {operator} ")))
                .await
                .unwrap(),
            Principal::Operator
        );
        let refused = [
            None,
            Some("Basic abc".to_string()),
            Some(bearer(&created.tenant.write_key)),
            Some(bearer(&KeyKind::Secret.generate())),
            Some(bearer(&KeyKind::Operator.generate())),
            Some(bearer("garbage")),
        ];
        for header in refused {
            let e = authenticate(&meta, header.as_deref()).await.unwrap_err();
            assert_eq!(e.class(), ErrorClass::Unauthorized, "{header:?}: {e}");
        }
        let write_key = authenticate(&meta, Some(&bearer(&created.tenant.write_key)))
            .await
            .unwrap_err();
        assert!(write_key.to_string().contains("write key"), "{write_key}");
    }
}
