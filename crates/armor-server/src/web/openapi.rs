//! `/openapi.json`, generated from [`ROUTES`], and `/docs`, a page that
//! renders it without any outside script.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::schema::{self, name};
use super::{Policy, Reply, ROUTES};

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let error = || json!({"application/json": {"schema": schema::reference(name::ERROR)}});
    let components = schema::components();
    let mut paths: Map<String, Value> = Map::new();
    for route in ROUTES {
        let (security, policy) = match route.policy {
            Policy::Public => (json!([]), "public"),
            Policy::Caller => (
                json!([{"FH-AUTH": []}, {"ARMOR-PSK": []}]),
                "any-credential",
            ),
            Policy::PasswordOnly => (json!([{"FH-AUTH": []}]), "password-only"),
            Policy::NoApiKey => (json!([{}, {"FH-AUTH": []}]), "no-api-key"),
        };
        let mut params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": path_param(name)}))
            .collect();
        if route.path == "/auditlog" {
            params.extend(audit_query());
        }
        if route.path.ends_with("/usage") {
            params.extend(usage_query());
        }
        let ok = match route.reply {
            Reply::Json(body) => {
                json!({"description": "OK", "content": {"application/json": {"schema": schema::reference(body)}}})
            }
            Reply::Other(media) => {
                json!({"description": "OK", "content": {media: {"schema": {"type": "string"}}}})
            }
        };
        let mut responses = json!({
            "200": ok,
            "default": {"description": "Refused: the error body", "content": error()},
        });
        if route.policy != Policy::Public {
            responses["401"] = json!({"description": "Not authenticated", "content": error()});
        }
        let mut op = json!({
            "summary": route.summary,
            "operationId": format!("{} {}", route.method, route.path),
            "security": security,
            "x-armor-policy": policy,
            "parameters": params,
            "responses": responses,
        });
        if let Some(body) = route.request {
            // An empty body reads as `{}`: a body is required only where
            // a field is.
            let required = components[body]["required"]
                .as_array()
                .is_some_and(|r| !r.is_empty());
            op["requestBody"] = json!({
                "required": required,
                "content": {"application/json": {"schema": schema::reference(body)}},
            });
        } else if route.method == "POST" && route.path == "/auth/whoami" {
            op["requestBody"] = json!({
                "required": false,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            });
        }
        // One path item per routed path: `POST /users/` (the vendor's
        // spelling) is at `/users`, beside `GET /users`.
        let key = match route.path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p,
            _ => route.path,
        };
        let entry = paths.entry(key.to_owned()).or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "armor API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Accounts, users, permissions and API keys. Authenticate with `Authorization: FH-AUTH <token>` (password login) or `Authorization: ARMOR-PSK {keyId}:{base64 HMAC-SHA512}:{nonce}:{timestamp}`. Paths match without regard to case. Request bodies may also be form-encoded (`application/x-www-form-urlencoded`)."
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "FH-AUTH": {"type": "http", "scheme": "FH-AUTH"},
                "ARMOR-PSK": {"type": "http", "scheme": "ARMOR-PSK"}
            }
        }
    })
}

/// Ids are 32-bit integers (`users/{id:int}`); anything else is one
/// segment of a canonical path: no `/` or `\\`, not `.` or `..` (other
/// spellings are refused with 400 `malformed_request_target`).
fn path_param(name: &str) -> Value {
    if name == "id" || name.ends_with("Id") {
        json!({"type": "integer", "format": "int32"})
    } else if name == "referencekey" {
        json!({"type": "string", "pattern": "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,100}$"})
    } else {
        json!({"type": "string", "pattern": "^(?!\\.{1,2}$)[^/\\\\]+$"})
    }
}

/// A key usage query's range and bucket.
fn usage_query() -> Vec<Value> {
    let q = |name: &str, schema: Value, description: &str| json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description});
    let time = || json!({"type": "string", "minLength": 1, "description": "RFC 3339 (2026-01-31T12:00:00Z) or Unix seconds"});
    vec![
        q(
            "from",
            time(),
            "start of the range (default: an hour, a day or 30 days before to, by bucket)",
        ),
        q(
            "to",
            time(),
            "end of the range, its bucket included (default: now)",
        ),
        q(
            "bucket",
            json!({"type": "string", "enum": ["minute", "hour", "day"]}),
            "bucket length (default hour); at most 1440 buckets per answer",
        ),
    ]
}

/// The audit log's filters and cursor.
fn audit_query() -> Vec<Value> {
    let q = |name: &str, schema: Value, description: &str| json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description});
    let int = || json!({"type": "integer", "format": "int64"});
    vec![
        q("limit", int(), "rows per page, 1 to 1000 (default 100)"),
        q(
            "user",
            int(),
            "rows this user acted in or was the target of",
        ),
        q("event", json!({"type": "string"}), "one event name"),
        q("since", int(), "Unix seconds, inclusive"),
        q("until", int(), "Unix seconds, inclusive"),
        q(
            "before",
            int(),
            "the cursor of the next page (X-Next-Before)",
        ),
    ]
}

pub async fn json() -> Json<Value> {
    Json(document())
}

pub async fn docs() -> Response {
    let mut rows = String::new();
    for r in ROUTES {
        let policy = match r.policy {
            Policy::Public => "public",
            Policy::Caller => "FH-AUTH or ARMOR-PSK",
            Policy::PasswordOnly => "FH-AUTH only",
            Policy::NoApiKey => "anonymous or FH-AUTH",
        };
        rows.push_str(&format!(
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>\n",
            r.method,
            html_escape(r.path),
            policy,
            html_escape(r.summary)
        ));
    }
    let page = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content='width=device-width,initial-scale=1'>\
<title>armor API reference</title><style>body{{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem}}\
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.4rem;text-align:left;vertical-align:top}}\
code{{font-size:90%}}</style></head><body><h1>armor API reference</h1>\
<p>Machine-readable: <a href=/openapi.json>/openapi.json</a>. Errors are <code>{{\"error\", \"error_description\", \"Message\", \"status\"}}</code>.</p>\
<table><thead><tr><th>Method</th><th>Path</th><th>Credential</th><th>What it does</th></tr></thead><tbody>{rows}</tbody></table></body></html>"
    );
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'",
        )],
        Html(page),
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in `v`.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_schema_referenced_exists_and_every_one_is_used() {
        let doc = document();
        let components = doc["components"]["schemas"].as_object().unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        for r in &found {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(components.contains_key(name), "{r} is not a component");
        }
        for name in components.keys() {
            let r = format!("#/components/schemas/{name}");
            assert!(found.contains(&r), "{name} is never used");
        }
    }

    #[test]
    fn every_route_answers_with_a_schema_and_errors_with_the_error_body() {
        let doc = document();
        let mut ops = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let ok = &op["responses"]["200"]["content"];
                assert!(ok.is_object(), "{method} {path}: no 200 body");
                assert_eq!(
                    op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{method} {path}"
                );
                ops += 1;
            }
        }
        assert_eq!(ops, ROUTES.len());
    }
}
