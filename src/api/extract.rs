//! Request extraction with OpenAI-shaped errors, list queries and the list envelope.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::wire::{Deleted, ListTag};
use crate::store::{Order, Page};

/// JSON body; malformed JSON, wrong types and unknown fields become 400s in OpenAI's words.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::new(e.status(), format!("Could not read the request body: {e}"))
        })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| json_error(&e))?;
        check_shape(&value, &mut String::new(), Shape::Object)?;
        super::decode::from_slice(bytes, &value).map(ApiJson)
    }
}

/// Request fields whose value is an object (or null). serde would also read an array there,
/// as the object's fields in order (`[null, null]` for `{"tool_resources": null, "metadata":
/// null}`), and a number where it expects an enum tag, as the variant's index (`"type": 0`).
/// So before a body is read into its type, these fields (and the body itself) may not be
/// arrays, no array may hold an array, and a `type` must be a string. Fields Oasis ignores
/// keep whatever shape they have.
pub const OBJECT_FIELDS: &[&str] = &[
    "attributes",
    "chunking_strategy",
    "code_interpreter",
    "expires_after",
    "file_search",
    "filters",
    "function",
    "image_file",
    "image_url",
    "json_schema",
    "metadata",
    "parameters",
    "ranking_options",
    "response_format",
    "schema",
    "static",
    "thread",
    "tool_choice",
    "tool_resources",
    "truncation_strategy",
];

/// Whether `key` of `object` holds free-form JSON (a JSON Schema, a file search tool's options,
/// a tool choice checked on its own), not checked here.
fn free_form(key: &str, object: &serde_json::Map<String, serde_json::Value>) -> bool {
    match key {
        "parameters" | "schema" | "tool_choice" => true,
        "file_search" => object.get("type").and_then(|t| t.as_str()) == Some("file_search"),
        // A compound search filter's list of filters (the search's own `filters` is an object).
        "filters" => matches!(
            object.get("type").and_then(|t| t.as_str()),
            Some("and" | "or")
        ),
        _ => false,
    }
}

/// What a value may be, for [`check_shape`].
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Object,
    NotArray,
    Any,
}

fn check_shape(v: &serde_json::Value, param: &mut String, shape: Shape) -> Result<(), ApiError> {
    use serde_json::Value;
    let len = param.len();
    match v {
        Value::Array(items) => {
            if param.is_empty() {
                return Err(ApiError::bad_request(
                    "Invalid request body: expected a JSON object, but got an array instead.",
                ));
            }
            let message = match shape {
                Shape::Object => "expected an object, but got an array instead",
                Shape::NotArray => "an array is not accepted here",
                Shape::Any => "",
            };
            if !message.is_empty() {
                return Err(ApiError::invalid(
                    param,
                    format!("Invalid type for '{param}': {message}."),
                ));
            }
            for (i, x) in items.iter().enumerate() {
                param.push_str(&format!("[{i}]"));
                check_shape(x, param, Shape::NotArray)?;
                param.truncate(len);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                if !param.is_empty() {
                    param.push('.');
                }
                param.push_str(k);
                if k == "type" && !x.is_string() {
                    return Err(ApiError::invalid(
                        param,
                        format!("Invalid type for '{param}': expected a string, but got {x}."),
                    ));
                }
                if !free_form(k, m) {
                    let shape = if OBJECT_FIELDS.contains(&k.as_str()) {
                        Shape::Object
                    } else {
                        Shape::Any
                    };
                    check_shape(x, param, shape)?;
                }
                param.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Turn a serde error into OpenAI's message.
pub fn json_error(e: &serde_json::Error) -> ApiError {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some(field) = rest.split('`').next()
    {
        return ApiError::invalid(
            field,
            format!("Unrecognized request argument supplied: {field}"),
        );
    }
    if let Some(rest) = msg.strip_prefix("missing field `")
        && let Some(field) = rest.split('`').next()
    {
        return ApiError::invalid(field, format!("Missing required parameter: '{field}'."));
    }
    // "unknown variant `retrieval`, expected one of `a`, `b`, `c` at line 1 column 9"
    if let Some(rest) = msg.strip_prefix("unknown variant `")
        && let Some((value, expected)) = rest.split_once('`')
    {
        let expected = expected.split(" at line ").next().unwrap_or_default();
        let names: Vec<String> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|n| format!("'{n}'"))
            .collect();
        let supported = match names.as_slice() {
            [] => String::new(),
            [one] => format!(" Supported values are: {one}."),
            [init @ .., last] => format!(" Supported values are: {}, and {last}.", init.join(", ")),
        };
        return ApiError::bad_request(format!("Invalid value: '{value}'.{supported}"));
    }
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            ApiError::bad_request(format!(
                "We could not parse the JSON body of your request. ({msg}) (HINT: This likely \
                 means you aren't using your HTTP library correctly. The OpenAI API expects a \
                 JSON payload, but what was sent was not valid JSON.)"
            ))
        }
        _ => ApiError::bad_request(format!("Invalid request body: {msg}")),
    }
}

/// A list's `limit` when none is given, and the most it may be (OpenAI's; files differ).
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

/// `?limit&order&after&before`.
#[derive(Debug, serde::Deserialize)]
pub struct ListQuery {
    pub limit: Option<String>,
    pub order: Option<String>,
    pub after: Option<String>,
    pub before: Option<String>,
    pub purpose: Option<String>,
    pub run_id: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(q) = Query::<ListQuery>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("Invalid query parameters: {e}")))?;
        Ok(q)
    }
}

impl ListQuery {
    /// The page asked for: `limit` 1 to 100, 20 by default (OpenAI's bounds for every list but
    /// files).
    pub fn page(&self) -> Result<Page, ApiError> {
        self.page_up_to(DEFAULT_LIMIT, MAX_LIMIT)
    }

    /// The page asked for, with `limit` 1 to `max` and `default` when not given.
    pub fn page_up_to(&self, default: usize, max: usize) -> Result<Page, ApiError> {
        let limit = match &self.limit {
            None => default,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => n,
                _ => {
                    return Err(ApiError::invalid(
                        "limit",
                        format!("Invalid 'limit': integer must be between 1 and {max}, got '{s}'."),
                    ));
                }
            },
        };
        let order = match self.order.as_deref() {
            None | Some("desc") => Order::Desc,
            Some("asc") => Order::Asc,
            Some(o) => {
                return Err(ApiError::invalid(
                    "order",
                    format!("Invalid 'order': expected 'asc' or 'desc', got '{o}'."),
                ));
            }
        };
        Ok(Page {
            limit,
            order,
            after: self.after.clone().filter(|s| !s.is_empty()),
            before: self.before.clone().filter(|s| !s.is_empty()),
        })
    }
}

/// `{object:"list", data, first_id, last_id, has_more}`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(rename = "{T}List")]
pub struct ListBody<T> {
    pub object: ListTag,
    pub data: Vec<T>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

impl<T: crate::model::Object> ListBody<T> {
    pub fn new(data: Vec<T>, has_more: bool) -> ListBody<T> {
        ListBody {
            object: ListTag,
            first_id: data.first().map(|o| o.id().to_string()),
            last_id: data.last().map(|o| o.id().to_string()),
            data,
            has_more,
        }
    }
}

/// `{id, object, deleted: true}`, with `object` from the tag type `T`.
pub fn deleted<T: Default>(id: &str) -> axum::Json<Deleted<T>> {
    axum::Json(Deleted::new(id))
}
