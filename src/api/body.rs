//! Reading JSON request bodies into typed requests, with every failure
//! turned into the right problem: 413 over the size limit, 415 without a
//! JSON content type, 400 for broken JSON, 422 (with the field's path) for
//! unknown fields, missing fields and wrong types.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::problem::{ApiError, FieldError};

/// Parses a body into `T`, also returning the parsed JSON (for hashing).
pub fn parse<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit_bytes: usize,
) -> Result<(T, Value), ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge(limit_bytes)
        } else {
            ApiError::MalformedJson(rejection.body_text())
        }
    })?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    if !value.is_object() {
        return Err(ApiError::invalid("", "not_an_object", "the body must be a JSON object"));
    }
    if let Some(path) = nul_in(&value, "") {
        return Err(ApiError::invalid(
            &path,
            "invalid_character",
            "text may not contain the NUL character (\\u0000)",
        ));
    }
    let typed = serde_path_to_error::deserialize(value.clone()).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        ApiError::Invalid(vec![field_error(&path, &message)])
    })?;
    Ok((typed, value))
}

/// The path of the first string (or key) holding a NUL character, which
/// PostgreSQL's text and jsonb cannot store.
fn nul_in(value: &Value, path: &str) -> Option<String> {
    let join = |name: &str| {
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    match value {
        Value::String(text) if text.contains('\0') => Some(path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in(item, &join(&i.to_string()))),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(path.to_owned())
            } else {
                nul_in(item, &join(key))
            }
        }),
        _ => None,
    }
}

/// Whether a raw URI carries a percent-encoded control character (NUL
/// and friends), which no identifier or filter of ours may contain.
pub(super) fn has_encoded_control(raw: &str) -> bool {
    raw.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && ((matches!(w[1], b'0' | b'1') && w[2].is_ascii_hexdigit())
                || (w[1] == b'7' && matches!(w[2], b'f' | b'F')))
    })
}

/// As [`parse`], for bodies that may be left out: an empty body is
/// `T::default()`.
pub fn parse_or_default<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit_bytes: usize,
) -> Result<T, ApiError> {
    if matches!(&body, Ok(bytes) if bytes.is_empty()) {
        return Ok(T::default());
    }
    parse::<T>(headers, body, limit_bytes).map(|(typed, _)| typed)
}

/// Names the field a serde error is about and classifies it.
fn field_error(path: &str, message: &str) -> FieldError {
    let base = if path == "." { "" } else { path };
    let quoted = message.split('`').nth(1).unwrap_or_default();
    let join = |name: &str| {
        if base.is_empty() {
            name.to_owned()
        } else {
            format!("{base}.{name}")
        }
    };
    if message.starts_with("unknown field") {
        // The path already ends at the unknown field.
        FieldError::new(base, "unknown_field", message)
    } else if message.starts_with("missing field") {
        FieldError::new(&join(quoted), "missing_field", "this field is required")
    } else {
        FieldError::new(base, "invalid_type", message)
    }
}

/// The `limit` query parameter: the configured default when absent, else
/// 1 to the configured maximum.
pub(super) fn page_limit(
    query: &std::collections::HashMap<String, String>,
    api: &crate::config::ApiConfig,
) -> Result<u32, super::problem::ApiError> {
    let max = api.max_page_size;
    match query.get("limit") {
        Some(l) => {
            l.parse::<u32>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                super::problem::ApiError::invalid("limit", "invalid_limit", format!("between 1 and {max}"))
            })
        }
        None => Ok(api.default_page_size),
    }
}

/// Cuts one extra row fetched to tell whether a next page exists; returns
/// the next page's cursor, made from the last row kept.
pub(super) fn next_page<T>(rows: &mut Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Option<String> {
    if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(cursor)
    } else {
        None
    }
}
