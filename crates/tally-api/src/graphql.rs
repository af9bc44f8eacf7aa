//! The GraphQL schema, generated at start-up from the query kinds the engine runs and
//! the JSON Schema of the model, and its resolvers.
//!
//! For every kind the [`QueryRunner`] executes there is a field
//! `<kind>(query: <Kind>Query!): <Kind>Result!`. Both types are custom scalars whose
//! description is the model type's doc comment and whose `@specifiedBy` URL is the
//! type's definition in `/graphql/schema.json`; a query is parsed by the model's serde
//! derive, so the model is written once (in tally-query) and both schemas are derived
//! from it. `tenants` lists tenants for operator keys.
//!
//! Owns: scope enforcement per field, time zones from tenant settings, the per-request
//! cap on analytics queries, depth and complexity limits. Does not own HTTP (see
//! [`crate::http`]) or how queries execute ([`crate::runner`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, Scalar, Schema,
    SchemaError, TypeRef,
};
use serde_json::Value;
use tally_core::{Classify, ErrorClass};
use tally_meta::{MetaStore, Tenant};
use tally_query::{Query, Scope};

use crate::auth::{Principal, apply_scope};
use crate::error::{Error, Result, RunError};
use crate::model::{JSON_SCHEMA_PATH, QueryKind, definition_description, json_schema, result_json};
use crate::runner::{QueryRunner, RunContext};

/// Limits on a GraphQL request.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Deepest selection nesting accepted (GraphiQL's introspection query needs 14).
    pub max_depth: usize,
    /// Most fields in one request, counted over the whole document with fragments
    /// expanded (GraphiQL's introspection query counts 200).
    pub max_complexity: usize,
    /// Most analytics queries (trends, funnel, ...) in one request: aliases would
    /// otherwise multiply one request into many engine queries, each with its own
    /// memory budget.
    pub max_queries_per_request: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_depth: 16,
            max_complexity: 500,
            max_queries_per_request: 8,
        }
    }
}

/// What resolvers share.
pub(crate) struct Shared {
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) runner: Arc<dyn QueryRunner>,
    pub(crate) config: ApiConfig,
}

/// The credentials of one request, resolved before execution. A failure is kept and
/// reported by the first field that needs credentials, so that schema introspection
/// (the explorer's documentation) works without a key.
pub(crate) enum Authentication {
    Valid(Principal),
    Failed(Error),
}

/// Analytics queries started so far in one request.
#[derive(Default)]
pub(crate) struct QueryBudget(AtomicUsize);

/// Builds the schema for the kinds `runner` executes.
pub(crate) fn build_schema(shared: Arc<Shared>) -> Result<Schema, SchemaError> {
    let model = json_schema();
    let describe = |name: &str| {
        definition_description(&model, name)
            .unwrap_or("See /graphql/schema.json.")
            .to_string()
    };
    let mut root = Object::new("Query").description(
        "Tally's analytics queries. Authenticate with `Authorization: Bearer <key>`: a tenant's secret key (tly_sec_...) reads that tenant only and may omit `scope`; an operator key (tly_op_...) names the scope and may list tenants.",
    );
    let mut scalars = Vec::new();
    for kind in shared.runner.kinds() {
        let specified_by = |name: &str| format!("{JSON_SCHEMA_PATH}#/$defs/{name}");
        scalars.push(
            Scalar::new(kind.query_type())
                .description(describe(kind.query_type()))
                .specified_by_url(specified_by(kind.query_type()))
                // The shape is checked by serde in the resolver, which names the
                // offending field; here only that it is an object.
                .validator(|v| matches!(v, async_graphql::Value::Object(_))),
        );
        scalars.push(
            Scalar::new(kind.result_type())
                .description(describe(kind.result_type()))
                .specified_by_url(specified_by(kind.result_type())),
        );
        root = root.field(
            Field::new(
                kind.name(),
                TypeRef::named_nn(kind.result_type()),
                move |ctx| FieldFuture::new(async move { resolve_query(kind, ctx).await }),
            )
            .description(format!(
                "Runs a {} query. `scope` may be omitted with a tenant key.",
                kind.name()
            ))
            .argument(
                InputValue::new("query", TypeRef::named_nn(kind.query_type()))
                    .description(describe(kind.query_type())),
            ),
        );
    }
    root = root.field(
        Field::new("tenants", TypeRef::named_nn_list_nn("Tenant"), |ctx| {
            FieldFuture::new(async move { resolve_tenants(ctx).await })
        })
        .description("Every tenant with its settings and attributes, by id. Operator keys only."),
    );

    let mut builder = Schema::build("Query", None, None)
        .register(root)
        .register(tenant_type())
        .register(Scalar::new("JSON").description("Any JSON value."))
        .limit_depth(shared.config.max_depth)
        .limit_complexity(shared.config.max_complexity)
        .data(shared);
    for scalar in scalars {
        builder = builder.register(scalar);
    }
    builder.finish()
}

fn tenant_type() -> Object {
    fn field(
        name: &str,
        ty: TypeRef,
        description: &str,
        value: fn(&Tenant) -> async_graphql::Value,
    ) -> Field {
        Field::new(name, ty, move |ctx| {
            FieldFuture::new(async move {
                let tenant = ctx.parent_value.try_downcast_ref::<Tenant>()?;
                Ok(Some(FieldValue::value(value(tenant))))
            })
        })
        .description(description)
    }
    Object::new("Tenant")
        .description("A tenant: one customer's isolated analytics project.")
        .field(field(
            "id",
            TypeRef::named_nn(TypeRef::INT),
            "The tenant id, as used in scopes.",
            |t| t.id.0.into(),
        ))
        .field(field(
            "name",
            TypeRef::named_nn(TypeRef::STRING),
            "The unique slug.",
            |t| t.name.clone().into(),
        ))
        .field(field(
            "timezone",
            TypeRef::named_nn(TypeRef::STRING),
            "IANA time zone used for the tenant's date bucketing.",
            |t| t.timezone.clone().into(),
        ))
        .field(field(
            "createdAt",
            TypeRef::named_nn(TypeRef::STRING),
            "When the tenant was created (RFC 3339).",
            |t| t.created_at.to_rfc3339().into(),
        ))
        .field(field(
            "attributes",
            TypeRef::named_nn("JSON"),
            "Operator-managed attributes (plan, owner, region, ...) as a JSON object of strings.",
            |t| {
                async_graphql::Value::Object(
                    t.attributes
                        .iter()
                        .map(|(k, v)| (async_graphql::Name::new(k), v.clone().into()))
                        .collect(),
                )
            },
        ))
}

fn principal(ctx: &ResolverContext<'_>) -> Result<Principal, async_graphql::Error> {
    match ctx.data::<Authentication>()? {
        Authentication::Valid(p) => Ok(*p),
        Authentication::Failed(e) => Err(e.to_graphql()),
    }
}

async fn resolve_query(
    kind: QueryKind,
    ctx: ResolverContext<'_>,
) -> Result<Option<FieldValue<'_>>, async_graphql::Error> {
    let shared = ctx.data::<Arc<Shared>>()?;
    let principal = principal(&ctx)?;
    if let Ok(budget) = ctx.data::<QueryBudget>() {
        let started = budget.0.fetch_add(1, Ordering::Relaxed) + 1;
        let max = shared.config.max_queries_per_request;
        if started > max {
            return Err(Error::BadRequest(format!(
                "a request may run at most {max} analytics queries; send the others in another request"
            ))
            .to_graphql());
        }
    }
    let raw = ctx
        .args
        .try_get("query")?
        .as_value()
        .clone()
        .into_json()
        .map_err(|e| Error::BadRequest(format!("the query is not JSON: {e}")).to_graphql())?;
    let started = Instant::now();
    let outcome = answer(shared, kind, principal, raw).await;
    metrics::counter!(
        "tally_api_queries_total",
        "kind" => kind.name(),
        "code" => match &outcome { Ok(_) => "OK", Err(e) => e.code() },
    )
    .increment(1);
    metrics::histogram!("tally_api_query_seconds", "kind" => kind.name())
        .record(started.elapsed().as_secs_f64());
    match outcome {
        Ok(json) => {
            tracing::debug!(kind = kind.name(), elapsed = ?started.elapsed(), "Query answered.");
            let value = async_graphql::Value::from_json(json).map_err(|e| {
                Error::Run(RunError::Failed {
                    class: ErrorClass::Internal,
                    source: Box::new(e),
                })
                .to_graphql()
            })?;
            Ok(Some(FieldValue::value(value)))
        }
        Err(e) => {
            if e.class().is_client_visible() {
                tracing::debug!(kind = kind.name(), code = e.code(), error = %e, "Query refused.");
            }
            Err(e.to_graphql())
        }
    }
}

/// Scopes, parses, validates and runs one query; returns its result's JSON.
async fn answer(
    shared: &Shared,
    kind: QueryKind,
    principal: Principal,
    raw: Value,
) -> Result<Value> {
    let Value::Object(mut object) = raw else {
        return Err(Error::BadRequest(format!(
            "a {} must be a JSON object",
            kind.query_type()
        )));
    };
    apply_scope(principal, &mut object)?;
    let query = parse(kind, Value::Object(object))?;
    query.validate()?;
    let context = match query.scope() {
        Scope::Tenant(tenant) => RunContext {
            now: tally_core::time::now_micros(),
            tenant_time_zone: Some(
                shared
                    .meta
                    .tenant_by_id(*tenant)
                    .await?
                    .ok_or(Error::TenantNotFound(*tenant))?
                    .timezone,
            ),
            tenants: Vec::new(),
        },
        // Operator queries bucket in UTC unless they name a time zone, and select
        // among all tenants by id and attributes.
        Scope::Operator { .. } => RunContext {
            now: tally_core::time::now_micros(),
            tenant_time_zone: None,
            tenants: shared.meta.list_tenants().await?,
        },
    };
    let result = shared.runner.run(&query, &context).await?;
    result_json(&result).map_err(|e| {
        Error::Run(RunError::Failed {
            class: ErrorClass::Internal,
            source: Box::new(e),
        })
    })
}

/// Parses a scoped query object as `kind`'s model type; a mistake is reported with
/// its path in the query (`series[0].math.type`).
fn parse(kind: QueryKind, object: Value) -> Result<Query> {
    fn typed<T: serde::de::DeserializeOwned>(
        object: Value,
    ) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
        serde_path_to_error::deserialize(object)
    }
    let parsed = match kind {
        QueryKind::Trends => typed(object).map(Query::Trends),
        QueryKind::Funnel => typed(object).map(Query::Funnel),
        QueryKind::Retention => typed(object).map(Query::Retention),
        QueryKind::Events => typed(object).map(Query::Events),
        QueryKind::Persons => typed(object).map(Query::Persons),
        QueryKind::Schema => typed(object).map(Query::Schema),
    };
    parsed.map_err(|e| {
        let path = e.path().to_string();
        let location = if path == "." {
            String::new()
        } else {
            format!(" at `{path}`")
        };
        Error::BadRequest(format!(
            "invalid {}{location}: {} (see {JSON_SCHEMA_PATH}#/$defs/{})",
            kind.query_type(),
            e.inner(),
            kind.query_type()
        ))
    })
}

async fn resolve_tenants(
    ctx: ResolverContext<'_>,
) -> Result<Option<FieldValue<'_>>, async_graphql::Error> {
    let shared = ctx.data::<Arc<Shared>>()?;
    match principal(&ctx)? {
        Principal::Operator => {}
        Principal::Tenant(_) => {
            return Err(Error::Forbidden(
                "listing tenants needs an operator key (tly_op_...); a secret key reads its own tenant only".into(),
            )
            .to_graphql());
        }
    }
    let tenants = shared
        .meta
        .list_tenants()
        .await
        .map_err(|e| Error::Meta(e).to_graphql())?;
    Ok(Some(FieldValue::list(
        tenants.into_iter().map(FieldValue::owned_any),
    )))
}
