//! Handlers of API-key administration. Every one takes [`PasswordCaller`]:
//! a key never manages keys.

use crate::web::Path;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{int_id, ApiResult};
use crate::clock::rfc3339;
use crate::core::keyspec::KeySpec;
use crate::core::restrictions::{self, list};
use crate::core::NewKey;
use crate::error::Error;
use crate::store::KeyRow;
use crate::web::auth::{ClientAddr, PasswordCaller};
use crate::web::{ApiJson, AppState};

/// A key's restrictions and status, as every representation of a key
/// shows them (`null` for a restriction the key does not have).
pub fn key_rules_json(k: &KeyRow, now: u64) -> Map<String, Value> {
    let r = &k.rules;
    let strings = |t: &Option<String>| match list(t) {
        Some(l) => Value::from(l.unwrap_or_default()),
        None => Value::Null,
    };
    let mut m = Map::new();
    m.insert(
        "expiresAt".into(),
        restrictions::effective_expiry(r).map(rfc3339).into(),
    );
    m.insert("permissions".into(), strings(&r.permissions));
    m.insert("allowedRoutes".into(), strings(&r.allowed_routes));
    m.insert("allowedIps".into(), strings(&r.allowed_ips));
    m.insert(
        "rateLimit".into(),
        match (r.rate_limit, r.rate_window) {
            (Some(limit), Some(window)) => json!({"limit": limit, "windowSeconds": window}),
            _ => Value::Null,
        },
    );
    m.insert("keyStatus".into(), restrictions::status(r, now).into());
    m.insert("rolledFrom".into(), r.rolled_from.clone().into());
    m
}

fn key_item(core: &AppState, k: KeyRow) -> Value {
    let last = core.keys.last_used(&k);
    let mut m = Map::new();
    m.insert("id".into(), k.id.clone().into());
    m.insert("name".into(), k.name.clone().into());
    m.insert("userId".into(), k.user_id.into());
    m.insert(
        "createdDate".into(),
        rfc3339(k.created_at.max(0) as u64).into(),
    );
    m.insert("lastUsed".into(), last.map(rfc3339).into());
    m.extend(key_rules_json(&k, core.now()));
    Value::Object(m)
}

/// A new key's answer: the secret (this once), and its representation.
fn new_key_response(core: &AppState, new: NewKey) -> Response {
    let mut m = Map::new();
    m.insert("id".into(), new.row.id.clone().into());
    m.insert("apiKey".into(), new.secret.as_str().into());
    m.insert("name".into(), new.row.name.clone().into());
    m.insert("userId".into(), new.row.user_id.into());
    m.insert(
        "createdDate".into(),
        rfc3339(new.row.created_at.max(0) as u64).into(),
    );
    m.extend(key_rules_json(&new.row, core.now()));
    let body = Value::Object(m);
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

pub async fn list_keys(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<Value>>> {
    let id = int_id(&id)?;
    let keys = core.keys.list_keys(&p, id).await?;
    Ok(Json(keys.into_iter().map(|k| key_item(&core, k)).collect()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateKeyBody {
    name: Option<String>,
    user_id: Option<i64>,
    #[serde(flatten)]
    spec: KeySpec,
}

pub async fn create_key(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> ApiResult<Response> {
    let id = int_id(&id)?;
    if body.user_id.is_some_and(|u| u != id) {
        return Err(Error::BadRequest("userId in the body must match the path".into()).into());
    }
    let name = body
        .name
        .ok_or_else(|| Error::BadRequest("name is required".into()))?;
    let new = core
        .keys
        .create_key(&p, id, &name, &body.spec, addr)
        .await?;
    Ok(new_key_response(&core, new))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollKeyBody {
    grace_seconds: Option<i64>,
}

pub async fn roll_key(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ClientAddr(addr): ClientAddr,
    Path((id, key)): Path<(String, String)>,
    ApiJson(body): ApiJson<RollKeyBody>,
) -> ApiResult<Response> {
    let id = int_id(&id)?;
    let (new, _old) = core
        .keys
        .roll_key(&p, id, &key, body.grace_seconds, addr)
        .await?;
    Ok(new_key_response(&core, new))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenameKeyBody {
    api_key_id: Option<String>,
    prev_api_key_name: Option<String>,
    new_api_key_name: Option<String>,
}

pub async fn rename_key(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RenameKeyBody>,
) -> ApiResult<Json<Value>> {
    let id = int_id(&id)?;
    let (Some(key), Some(new)) = (body.api_key_id, body.new_api_key_name) else {
        return Err(Error::BadRequest("apiKeyId and newApiKeyName are required".into()).into());
    };
    let row = core
        .keys
        .rename_key(&p, id, &key, body.prev_api_key_name.as_deref(), &new)
        .await?;
    Ok(Json(key_item(&core, row)))
}

pub async fn delete_key(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    ClientAddr(addr): ClientAddr,
    Path((id, key)): Path<(String, String)>,
) -> ApiResult<Json<bool>> {
    let id = int_id(&id)?;
    core.keys.delete_key(&p, id, &key, addr).await?;
    Ok(Json(true))
}
