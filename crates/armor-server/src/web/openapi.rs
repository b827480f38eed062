//! `/openapi.json`, generated from [`ROUTES`], and `/docs`, a page that
//! renders it without any outside script.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::{Policy, ROUTES};

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let error = json!({
        "type": "object",
        "required": ["error", "error_description", "Message", "status"],
        "properties": {
            "error": {"type": "string", "description": "stable machine-readable code"},
            "error_description": {"type": "string"},
            "Message": {"type": "string"},
            "status": {"type": "integer"},
            "serverTime": {"type": "integer"}
        }
    });
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
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut responses = json!({
            "200": {"description": "OK"},
            "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        });
        if route.policy != Policy::Public {
            responses["401"] = json!({"description": "Not authenticated", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        }
        let op = json!({
            "summary": route.summary,
            "operationId": format!("{} {}", route.method, route.path),
            "security": security,
            "x-armor-policy": policy,
            "parameters": params,
            "responses": responses,
        });
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "armor API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Accounts, users, permissions and API keys. Authenticate with `Authorization: FH-AUTH <token>` (password login) or `Authorization: ARMOR-PSK {keyId}:{base64 HMAC-SHA512}:{nonce}:{timestamp}`. Paths match without regard to case."
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": error},
            "securitySchemes": {
                "FH-AUTH": {"type": "http", "scheme": "FH-AUTH"},
                "ARMOR-PSK": {"type": "http", "scheme": "ARMOR-PSK"}
            }
        }
    })
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
