//! `GET /users/{id}/keys/{key}/usage`: a key's requests, accepted and
//! refused by error code, per minute, hour or day.

use crate::web::Path;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{int_id, ApiResult};
use crate::clock::rfc3339;
use crate::core::usage::{DAY, HOUR, MINUTE};
use crate::error::Error;
use crate::web::auth::PasswordCaller;
use crate::web::{ApiQuery, AppState};

/// Buckets one answer may hold (a day of minutes, 60 days of hours).
pub const MAX_BUCKETS: u64 = 1440;

#[derive(Deserialize)]
pub struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
}

/// A bucket name's length in seconds, and the span shown when `from` is
/// not given.
fn grain_of(bucket: &str) -> Option<(u64, u64)> {
    match bucket {
        "minute" => Some((MINUTE, HOUR)),
        "hour" => Some((HOUR, DAY)),
        "day" => Some((DAY, 30 * DAY)),
        _ => None,
    }
}

pub async fn key_usage(
    State(core): State<AppState>,
    PasswordCaller(p): PasswordCaller,
    Path((id, key)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Json<Value>> {
    let id = int_id(&id)?;
    let bucket = q.bucket.as_deref().unwrap_or("hour");
    let (grain, span) = grain_of(bucket).ok_or_else(|| {
        Error::BadRequest(format!(
            "bucket must be minute, hour or day, not {bucket:?}"
        ))
    })?;
    let instant = |name: &str, v: &Option<String>| -> Result<Option<u64>, Error> {
        v.as_deref()
            .map(|t| {
                parse_instant(t).ok_or_else(|| {
                    Error::BadRequest(format!(
                        "{name} must be an RFC 3339 time (2026-01-31T12:00:00Z) or Unix seconds"
                    ))
                })
            })
            .transpose()
    };
    // Up to and including the bucket holding `to` (default: now).
    let to = instant("to", &q.to)?.unwrap_or_else(|| core.clock.now());
    let end = (to / grain).saturating_add(1).saturating_mul(grain);
    let from = instant("from", &q.from)?.unwrap_or_else(|| end.saturating_sub(span));
    if from > to {
        return Err(Error::BadRequest("from must not be after to".into()).into());
    }
    let start = from / grain * grain;
    let n = (end - start) / grain;
    if n > MAX_BUCKETS {
        return Err(Error::BadRequest(format!(
            "{n} {bucket} buckets asked; at most {MAX_BUCKETS} per request (narrow from/to or use a larger bucket)"
        ))
        .into());
    }
    let counts = core.keys.key_usage(&p, id, &key, grain, start, end).await?;
    let buckets: Vec<Value> = (0..n)
        .map(|i| {
            let s = start + i * grain;
            let c = counts.get(&s);
            let refused: Map<String, Value> = c
                .map(|c| {
                    c.refused
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(v)))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "start": rfc3339(s),
                "accepted": c.map_or(0, |c| c.accepted),
                "refused": refused,
            })
        })
        .collect();
    Ok(Json(json!({
        "keyId": key.to_ascii_lowercase(),
        "bucket": bucket,
        "buckets": buckets,
    })))
}

/// Unix seconds, or an RFC 3339 time (`2026-01-31T12:00:00Z`, a fraction
/// and a `+hh:mm` offset allowed); `None` if neither or before 1970.
pub fn parse_instant(t: &str) -> Option<u64> {
    if !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().ok();
    }
    if t.trim() != t {
        return None;
    }
    u64::try_from(crate::core::keyspec::parse_rfc3339(t)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants() {
        assert_eq!(parse_instant("0"), Some(0));
        assert_eq!(parse_instant("1700000000"), Some(1_700_000_000));
        assert_eq!(parse_instant("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_instant("2026-11-23T10:33:43Z"), Some(1_795_430_023));
        assert_eq!(
            parse_instant("2026-11-23T11:33:43.5+01:00"),
            Some(1_795_430_023)
        );
        for bad in [
            "",
            "x",
            "2026-11-23T10:33:43+-1:00",
            "2026-02-30T00:00:00Z",
            "2026-11-23T10:33:43",
            "1969-12-31T23:59:59Z",
            "-1",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
        assert_eq!(
            rfc3339(parse_instant("2024-02-29T23:59:59Z").unwrap()),
            "2024-02-29T23:59:59Z"
        );
    }
}
