//! The scalar functions the DataFusion dialect of `tally-sql` names, implemented with
//! exactly the semantics of `tally_query::filter::semantics`.
//!
//! `tally_to_number(text)`: Tally's numeric reading of a string (Rust's `f64` parser,
//! finite only). `tally_json_{string,number,bool,other}(json, key)`: the top-level
//! `key` of a JSON object text when its value has that type class (other: array or
//! object, as compact JSON). Malformed JSON reads as "no value", never an error: the
//! store only holds JSON it serialised itself.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanBuilder, Float64Builder, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use serde_json::Value;
use tally_query::filter::semantics;

/// Registers every `tally_*` scalar function on `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(to_number());
    for kind in [
        JsonKind::String,
        JsonKind::Number,
        JsonKind::Bool,
        JsonKind::Other,
    ] {
        ctx.register_udf(json_extract(kind));
    }
}

fn strings(arg: &ColumnarValue, rows: usize) -> DfResult<StringArray> {
    let array = arg.clone().into_array(rows)?;
    let array = cast(&array, &DataType::Utf8)?;
    Ok(array
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .unwrap_or_else(|| StringArray::new_null(rows)))
}

fn rows_of(args: &[ColumnarValue]) -> usize {
    args.iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1)
}

fn finish(args: &[ColumnarValue], array: ArrayRef) -> DfResult<ColumnarValue> {
    if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
        Ok(ColumnarValue::Scalar(
            datafusion::common::ScalarValue::try_from_array(&array, 0)?,
        ))
    } else {
        Ok(ColumnarValue::Array(array))
    }
}

fn to_number() -> ScalarUDF {
    create_udf(
        "tally_to_number",
        vec![DataType::Utf8],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = rows_of(args);
            let input = strings(&args[0], rows)?;
            let mut out = Float64Builder::with_capacity(rows);
            for v in input.iter() {
                out.append_option(
                    v.and_then(|s| semantics::as_number(&Value::String(s.to_string()))),
                );
            }
            finish(args, Arc::new(out.finish()))
        }),
    )
}

#[derive(Clone, Copy)]
enum JsonKind {
    String,
    Number,
    Bool,
    Other,
}

fn json_extract(kind: JsonKind) -> ScalarUDF {
    let (name, ty) = match kind {
        JsonKind::String => ("tally_json_string", DataType::Utf8),
        JsonKind::Number => ("tally_json_number", DataType::Float64),
        JsonKind::Bool => ("tally_json_bool", DataType::Boolean),
        JsonKind::Other => ("tally_json_other", DataType::Utf8),
    };
    create_udf(
        name,
        vec![DataType::Utf8, DataType::Utf8],
        ty,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let rows = rows_of(args);
            let json = strings(&args[0], rows)?;
            let keys = strings(&args[1], rows)?;
            let value_at = |i: usize| -> Option<Value> {
                if json.is_null(i) || keys.is_null(i) {
                    return None;
                }
                let mut obj: serde_json::Map<String, Value> =
                    serde_json::from_str(json.value(i)).ok()?;
                obj.remove(keys.value(i))
            };
            let array: ArrayRef = match kind {
                JsonKind::String | JsonKind::Other => {
                    let mut out = StringBuilder::with_capacity(rows, rows * 8);
                    for i in 0..rows {
                        out.append_option(match (kind, value_at(i)) {
                            (JsonKind::String, Some(Value::String(s))) => Some(s),
                            (JsonKind::Other, Some(v @ (Value::Array(_) | Value::Object(_)))) => {
                                Some(v.to_string())
                            }
                            _ => None,
                        });
                    }
                    Arc::new(out.finish())
                }
                JsonKind::Number => {
                    let mut out = Float64Builder::with_capacity(rows);
                    for i in 0..rows {
                        out.append_option(match value_at(i) {
                            Some(Value::Number(n)) => n.as_f64(),
                            _ => None,
                        });
                    }
                    Arc::new(out.finish())
                }
                JsonKind::Bool => {
                    let mut out = BooleanBuilder::with_capacity(rows);
                    for i in 0..rows {
                        out.append_option(match value_at(i) {
                            Some(Value::Bool(b)) => Some(b),
                            _ => None,
                        });
                    }
                    Arc::new(out.finish())
                }
            };
            finish(args, array)
        }),
    )
}

/// The value of an aggregate's constant string argument (a spec), evaluated without
/// rows: `name` and `signature` make the error say what was expected.
pub(crate) fn constant_string_arg(
    args: &datafusion::logical_expr::function::AccumulatorArgs,
    index: usize,
    name: &str,
    signature: &str,
) -> datafusion::error::Result<String> {
    use datafusion::arrow::array::RecordBatch;
    use datafusion::common::{ScalarValue, exec_err};

    let Some(expr) = args.exprs.get(index) else {
        return exec_err!("{name} takes {signature}");
    };
    // A constant: evaluating it needs no rows.
    let empty = RecordBatch::new_empty(Arc::new(args.schema.clone()));
    match expr.evaluate(&empty)? {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
        ) => Ok(s),
        _ => exec_err!("{name}: the spec must be a constant string"),
    }
}
