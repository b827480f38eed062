//! One key's page (`/portal/keys/{id}`): what the key may do, its usage
//! chart (`portal/usage.rs`), and **Roll**. The page is a list of
//! sections ([`sections`]); further ones go there.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

use super::keys::{forbidden, secret_page};
use super::layout::{self, Nav};
use super::session::{CsrfForm, Session};
use crate::core::perm;
use crate::core::restrictions::{self, list};
use crate::error::Error;
use crate::store::KeyRow;
use crate::web::auth::ClientAddr;
use crate::web::AppState;

/// Grace periods offered by Roll: seconds and label (a day by default).
const GRACE: [(&str, &str); 4] = [
    ("0", "None: the old key stops now"),
    ("3600", "1 hour"),
    ("86400", "1 day"),
    ("604800", "7 days"),
];

/// A key status as a badge: a word and a mark, never colour alone.
pub fn status_badge(status: &str) -> Markup {
    let class = match status {
        "Active" => "badge badge-ok",
        "Rolled" => "badge badge-warn",
        _ => "badge badge-off",
    };
    html! { span class=(class) data-status=(status) { (status) } }
}

async fn readable(core: &AppState, s: &Session, id: &str) -> Result<KeyRow, Response> {
    match core.keys.readable(&s.p, id).await {
        Ok(k) => Ok(k),
        Err(Error::NotFound(_)) => Err(super::error_page(&Error::NotFound("API key"))),
        Err(Error::PermissionDenied(_)) => Err(forbidden(s)),
        Err(e) => Err(super::error_page(&e)),
    }
}

fn listed(text: &Option<String>, none: &str) -> Markup {
    match list(text) {
        Some(l) => {
            let l = l.unwrap_or_default();
            html! {
                @if l.is_empty() { span.muted { "None" } }
                @else { ul.plain { @for x in &l { li { code { (x) } } } } }
            }
        }
        None => html! { span.muted { (none) } },
    }
}

/// What the key is and may do.
fn facts(core: &AppState, k: &KeyRow) -> Markup {
    let r = &k.rules;
    let status = restrictions::status(r, core.now());
    html! {
        section.card #key-facts {
            h2.card-title #key-name { (k.name) }
            dl.facts {
                dt { "Key ID" } dd { code #key-id { (k.id) } }
                dt { "Status" } dd #key-status { (status_badge(status)) }
                dt { "Created" } dd { (super::when(k.created_at)) }
                dt { "Last used" } dd {
                    @match core.keys.last_used(k) {
                        Some(t) => { (super::when(i64::try_from(t).unwrap_or(i64::MAX))) }
                        None => { span.muted { "Never" } }
                    }
                }
                dt { "Expires" } dd #key-expires {
                    @match restrictions::effective_expiry(r) {
                        Some(t) => { (super::when(i64::try_from(t).unwrap_or(i64::MAX))) }
                        None => { span.muted { "Never" } }
                    }
                }
                dt { "Permissions" } dd #key-permissions { (listed(&r.permissions, "All of its user's")) }
                dt { "Allowed routes" } dd #key-routes { (listed(&r.allowed_routes, "Any")) }
                dt { "Allowed IP ranges" } dd #key-ips { (listed(&r.allowed_ips, "Any")) }
                dt { "Rate limit" } dd #key-rate {
                    @match (r.rate_limit, r.rate_window) {
                        (Some(n), Some(w)) => { (n) " requests per " (w) " s" }
                        _ => { span.muted { "None" } }
                    }
                }
                @if let Some(from) = &r.rolled_from {
                    dt { "Replaces" } dd { a href={ "/portal/keys/" (from) } { code { (from) } } }
                }
            }
        }
    }
}

/// Roll: only the owner's own active keys.
fn roll_section(s: &Session, k: &KeyRow, status: &str) -> Markup {
    let may = k.user_id == s.p.user_id && s.p.has(perm::KEYS_SELF_MANAGE);
    html! {
        @if may && status == "Active" {
            section.card.card-form #roll {
                h2.card-title { "Roll" }
                p.muted {
                    "Rolling creates a new key with a new Secret Key, the same name and the same restrictions. "
                    "The old key keeps working for the grace period, so you can deploy the new secret first."
                }
                form.row-form method="post" action={ "/portal/keys/" (k.id) "/roll" } {
                    (layout::csrf(s))
                    label.field.grow {
                        span.field-label { "Grace period for the old key" }
                        select #roll-grace name="grace" {
                            @for (value, label) in GRACE {
                                option value=(value) selected[value == "86400"] { (label) }
                            }
                        }
                    }
                    button.btn.btn-primary #roll-key type="submit" { "Roll" }
                }
            }
        }
    }
}

/// The page's sections, in order: facts, usage over `range`, Roll.
async fn sections(
    core: &AppState,
    s: &Session,
    k: &KeyRow,
    range: Option<&str>,
) -> Result<Vec<Markup>, Error> {
    let status = restrictions::status(&k.rules, core.now());
    let usage = super::usage::chart_section(core, s, k, range).await?;
    Ok(vec![facts(core, k), usage, roll_section(s, k, status)])
}

#[derive(Deserialize)]
pub struct KeyPageQuery {
    range: Option<String>,
}

/// `GET /portal/keys/{id}`.
pub async fn page(
    State(core): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    Query(q): Query<KeyPageQuery>,
) -> Response {
    let k = match readable(&core, &s, &id).await {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    let sections = match sections(&core, &s, &k, q.range.as_deref()).await {
        Ok(sections) => sections,
        Err(e) => return super::error_page(&e),
    };
    let body = html! {
        (layout::user_tabs(Nav::Keys))
        p { a #back href="/portal/keys" { "← API Keys" } }
        @for section in &sections { (section) }
    };
    super::html(
        StatusCode::OK,
        layout::page(&s, Nav::Keys, "API Keys", body),
    )
}

#[derive(Deserialize)]
pub struct RollForm {
    grace: Option<String>,
}

/// `POST /portal/keys/{id}/roll`: rolls, then shows the new secret once.
pub async fn roll(
    State(core): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<String>,
    CsrfForm { session: s, form }: CsrfForm<RollForm>,
) -> Response {
    let k = match readable(&core, &s, &id).await {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    let grace = form.grace.as_deref().and_then(|g| g.parse().ok());
    match core
        .keys
        .roll_key(&s.p, k.user_id, &k.id, grace, addr)
        .await
    {
        Ok((new, old)) => secret_page(&s, &new, Some(&old)),
        Err(Error::PermissionDenied(_)) => forbidden(&s),
        Err(e) => super::error_page(&e),
    }
}
