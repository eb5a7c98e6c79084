//! Task endpoints: submit (with `Idempotency-Key`), list with a cursor, one task with an `ETag`,
//! and cancel. Submission parses and validates here so that every refusal is a 4xx with serde's
//! or the spec's own words; the decision to accept goes through [`Control`](crate::control::Control).
//! Nothing here may answer 500 to any input a client can send.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orgmesh_protocol::{TaskId, TaskSpec, TaskStatus};
use orgmesh_store::Idempotency;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::caller::Caller;
use crate::params::task_id;
use crate::problem::{Problem, excerpt};
use crate::state::ApiState;

/// Page size of `GET /v1/tasks` without `limit`.
const DEFAULT_LIMIT: usize = 50;
/// Largest `limit` accepted.
const MAX_LIMIT: usize = 1000;
/// Longest `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// `POST /v1/tasks`: the task and its `task.created` event (with the caller as `actor`) are
/// durable when this answers 202.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", security(("bearer" = ["submit"])),
    request_body(content = crate::schema::TaskSpec, description = "The task spec"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays with the same key and body return the same task")),
    responses(
        (status = 202, description = "Accepted and durable", body = crate::schema::Accepted),
        (status = 200, description = "A replay of an earlier submission", body = crate::schema::Accepted),
        (status = 409, description = "Same key, different body", body = crate::schema::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid spec", body = crate::schema::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn submit(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    // The body limit layer makes an oversized body fail here; keep its status (413).
    let body = body.map_err(|e| Problem::new(e.status(), e.body_text()))?;
    let spec = parse_spec(&body)?;
    spec.validate().map_err(|e| Problem::unprocessable(e.to_string()))?;
    let idempotency = match key {
        Some(key) => Some(Idempotency { key, body_hash: spec_hash(&spec)? }),
        None => None,
    };
    let submitted = state.control.submit(caller.actor, spec, idempotency).await?;
    // A replay answers 200: nothing new was accepted, but it is the same task.
    let status = if submitted.existing { StatusCode::OK } else { StatusCode::ACCEPTED };
    let location = HeaderValue::from_str(&format!("/v1/tasks/{}", submitted.id))
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let body = Json(json!({ "id": submitted.id, "status": submitted.status }));
    Ok((status, [(header::LOCATION, location)], body).into_response())
}

/// The optional `Idempotency-Key`: 1..=255 visible ASCII characters, at most one header.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Problem::bad_request("Idempotency-Key: give the header once"));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(Problem::bad_request(format!(
            "Idempotency-Key: must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        )));
    }
    // Checked to be ASCII just above.
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Parses a spec: malformed JSON is 400, JSON of the wrong shape is 422 with serde's message.
///
/// A number written with a zero fraction (`3.0`) is an integer to JSON Schema, and so to many
/// clients; it is accepted where an integer is expected (a slower second pass, only on failure).
pub(crate) fn parse_spec(body: &[u8]) -> Result<TaskSpec, Problem> {
    let e = match serde_json::from_slice::<TaskSpec>(body) {
        Ok(spec) => return Ok(spec),
        Err(e) => e,
    };
    if e.classify() != serde_json::error::Category::Data {
        return Err(Problem::bad_request(format!("request body is not valid JSON: {e}")));
    }
    let integral = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|mut value| {
        integral_floats_to_integers(&mut value).then(|| serde_json::from_value::<TaskSpec>(value).ok())?
    });
    integral.ok_or_else(|| Problem::unprocessable(e.to_string()))
}

/// Rewrites every float with a zero fraction that fits an `i64`/`u64` as that integer; returns
/// whether anything changed.
fn integral_floats_to_integers(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            let int = if f.fract() != 0.0 || !f.is_finite() {
                None
            } else if (0.0..1.8e19).contains(&f) {
                Some(Value::from(f as u64))
            } else if (-9.2e18..0.0).contains(&f) {
                Some(Value::from(f as i64))
            } else {
                None
            };
            int.map(|v| *value = v).is_some()
        }
        Value::Array(items) => {
            items.iter_mut().fold(false, |changed, v| integral_floats_to_integers(v) | changed)
        }
        Value::Object(map) => {
            map.values_mut().fold(false, |changed, v| integral_floats_to_integers(v) | changed)
        }
        _ => false,
    }
}

/// SHA-256 of the spec re-serialized: the same task written with other whitespace, key order or
/// explicit defaults hashes the same.
pub(crate) fn spec_hash(spec: &TaskSpec) -> Result<[u8; 32], Problem> {
    let canonical = serde_json::to_vec(spec)
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode spec: {e}")))?;
    Ok(Sha256::digest(&canonical).into())
}

/// `GET /v1/tasks?status=S&limit=N&cursor=C`: newest first; `next_cursor` is set when more exist.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", security(("bearer" = ["read"])),
    params(
        ("status" = Option<String>, Query, description = "Only tasks with this status"),
        ("limit" = Option<usize>, Query, description = "Page size, 1 to 1000 (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, description = "A page of tasks", body = crate::schema::TaskList)))]
pub(crate) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let status = match query.get("status") {
        None => None,
        Some(s) => Some(s.parse::<TaskStatus>().map_err(|_| {
            let all: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
            Problem::bad_request(format!("status: {:?} is not one of {}", excerpt(s), all.join(", ")))
        })?),
    };
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(Problem::bad_request(format!("limit: must be an integer from 1 to {MAX_LIMIT}")));
            }
        },
    };
    let cursor = match query.get("cursor") {
        None => None,
        Some(s) => Some(s.parse::<TaskId>().map_err(|e| Problem::bad_request(format!("cursor: {e}")))?),
    };
    // One extra row tells whether another page exists, so a client never fetches an empty page.
    let mut items = state.store.list_tasks(status, limit + 1, cursor)?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|t| t.id.to_string())
    } else {
        None
    };
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

/// `GET /v1/tasks/{id}`, with a strong `ETag` over the body and `If-None-Match` → 304.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = ["read"])),
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task, with an ETag", body = crate::schema::Task),
        (status = 304, description = "Unchanged since the If-None-Match tag"),
        (status = 404, description = "No such task here", body = crate::schema::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let id = task_id(path)?;
    let task =
        state.store.task(id)?.ok_or_else(|| Problem::not_found(format!("no task {id} at this node")))?;
    let body = serde_json::to_vec(&task)
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode task: {e}")))?;
    let etag = etag_of(&body);
    let etag_header = HeaderValue::from_str(&etag)
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if if_none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response());
    }
    let json = HeaderValue::from_static("application/json");
    Ok((StatusCode::OK, [(header::ETAG, etag_header), (header::CONTENT_TYPE, json)], body).into_response())
}

/// A strong entity tag: the first 128 bits of the body's SHA-256, quoted.
fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Whether `If-None-Match` names `etag` (weak comparison, as RFC 9110 asks for this header).
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|list| {
        list.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
    })
}

/// `POST /v1/tasks/{id}/cancel`: 202 once the node took the request; the task's status moves
/// to `cancelled` when the cancel lands wherever it runs. Recorded with its actor.
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks", security(("bearer" = ["submit"])),
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 202, description = "The cancel is under way", body = crate::schema::CancelAccepted),
        (status = 404, description = "No such task here", body = crate::schema::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task already ended", body = crate::schema::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn cancel(
    State(state): State<ApiState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let id = task_id(path)?;
    state.control.cancel(caller.actor, id).await?;
    // Report the status as stored now; `cancel_requested` says the cancel is under way.
    let status = state.store.task(id)?.map(|t| t.status);
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id, "status": status, "cancel_requested": true })))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_errors_split_into_syntax_and_data() {
        assert_eq!(parse_spec(b"{not json").unwrap_err().status(), StatusCode::BAD_REQUEST);
        assert_eq!(parse_spec(b"").unwrap_err().status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            parse_spec(br#"{"command":["x"]} trailing"#).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        for data_err in [
            &br#"{"command":"not-a-list"}"#[..],
            br#"{"comand":["x"]}"#,
            br#"{}"#,
            br#"[1]"#,
            br#"{"command":["x"],"timeout_s":-1}"#,
        ] {
            assert_eq!(parse_spec(data_err).unwrap_err().status(), StatusCode::UNPROCESSABLE_ENTITY);
        }
        assert!(parse_spec(br#"{"command":["x"]}"#).is_ok());
    }

    #[test]
    fn spec_hash_ignores_layout_and_explicit_defaults() {
        let a = parse_spec(br#"{"command":["x"]}"#).unwrap();
        let b = parse_spec(b"{ \"timeout_s\": 3600,\n  \"command\" : [\"x\"] }").unwrap();
        let c = parse_spec(br#"{"command":["y"]}"#).unwrap();
        assert_eq!(spec_hash(&a).unwrap(), spec_hash(&b).unwrap());
        assert_ne!(spec_hash(&a).unwrap(), spec_hash(&c).unwrap());
    }

    #[test]
    fn integral_floats_are_integers_and_other_floats_are_refused() {
        let spec =
            parse_spec(br#"{"command": ["true"], "timeout_s": 33.0, "resources": {"gpus": 1e0}}"#).unwrap();
        assert_eq!((spec.timeout_s, spec.resources.gpus), (33, 1));
        assert!(parse_spec(br#"{"command": ["true"], "timeout_s": 33.5}"#).is_err());
        assert!(parse_spec(br#"{"command": ["true"], "max_attempts": -1.0}"#).is_err());
        assert!(parse_spec(br#"{"command": ["true"], "timeout_s": 1e300}"#).is_err());
        // A float where a string belongs is still wrong.
        assert!(parse_spec(br#"{"command": [1.0]}"#).is_err());
    }

    #[test]
    fn idempotency_key_rules() {
        let with = |v: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert("idempotency-key", HeaderValue::from_bytes(v).unwrap());
            idempotency_key(&h)
        };
        assert_eq!(idempotency_key(&HeaderMap::new()).unwrap(), None);
        assert_eq!(with(b"abc-1").unwrap(), Some("abc-1".into()));
        assert!(with(b"").is_err());
        assert!(with(b"has space").is_err());
        assert!(with("é".as_bytes()).is_err());
        assert!(with(&[b'k'; 256]).is_err());
        assert!(with(&[b'k'; 255]).is_ok());
        let mut two = HeaderMap::new();
        two.append("idempotency-key", HeaderValue::from_static("a"));
        two.append("idempotency-key", HeaderValue::from_static("b"));
        assert!(idempotency_key(&two).is_err());
    }

    #[test]
    fn if_none_match_lists_weak_tags_and_star() {
        let tag = etag_of(b"{}");
        let check = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
            if_none_match(&h, &tag)
        };
        assert!(check(&tag));
        assert!(check(&format!("\"other\", W/{tag}")));
        assert!(check("*"));
        assert!(!check("\"other\""));
        assert!(!if_none_match(&HeaderMap::new(), &tag));
    }
}
