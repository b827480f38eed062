//! API Keys: steps 4 to 8 of the vendor's portal walkthrough. The table of keys, the plus icon's
//! form, the one page that shows a Secret Key, and deletion with a
//! confirmation step.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::keyform::{self, KeyForm};
use super::layout::{self, Nav, KEY_PERMISSIONS};
use super::session::{CsrfForm, Session};
use crate::core::perm;
use crate::core::restrictions::{effective_expiry, status};
use crate::error::Error;
use crate::store::KeyRow;
use crate::web::auth::ClientAddr;
use crate::web::AppState;

use crate::core::keys::{KeyAdmin, VisibleKey as Row};

fn can_delete(s: &Session, owner: i64) -> bool {
    KeyAdmin::may_delete(&s.p, owner)
}

async fn rows(core: &AppState, s: &Session) -> Result<Vec<Row>, Error> {
    core.keys.visible_keys(&s.p, &s.user.email).await
}

/// A date in a table cell: the day, the minute in its title.
fn day(secs: i64) -> Markup {
    let full = super::when(secs);
    html! { time.nowrap title=(full) { (full[..10]) } }
}

fn explanation(s: &Session) -> Markup {
    layout::missing_permissions(
        s,
        "create or access the API Keys screen",
        &KEY_PERMISSIONS,
        None,
    )
}

#[derive(Deserialize)]
pub struct KeysQuery {
    /// The key just created: its row is highlighted.
    new: Option<String>,
    /// What just happened: `deleted`.
    notice: Option<String>,
}

/// `GET /portal/keys`: the API Keys table (step 8).
pub async fn page(
    State(core): State<AppState>,
    s: Session,
    Query(q): Query<KeysQuery>,
) -> Response {
    let can_self = s.p.has(perm::KEYS_SELF_MANAGE);
    let all = s.p.has(perm::KEYS_ALL_READ);
    if !can_self && !all {
        let body = html! { (layout::user_tabs(Nav::Keys)) (explanation(&s)) };
        return super::html(
            StatusCode::FORBIDDEN,
            layout::page(&s, Nav::Keys, "API Keys", body),
        );
    }
    let rows = match rows(&core, &s).await {
        Ok(r) => r,
        Err(e) => return super::error_page(&e),
    };
    let new = q.new.as_deref().unwrap_or_default();
    let body = html! {
        (layout::user_tabs(Nav::Keys))
        @if q.notice.as_deref() == Some("deleted") {
            div.callout.callout-ok #notice role="status" {
                "The API key was deleted: requests signed with it are refused from now on."
            }
        }
        section.card.card-table {
            div.card-head {
                div {
                    h2.card-title { "API Keys" }
                    p.card-sub.muted {
                        @if all { "Every user's keys in " (s.account.name) "." }
                        @else { "Your keys in " (s.account.name) "." }
                        " A key signs requests to the Armor API with an ARMOR-PSK header; it can be given an expiry and restrictions when it is created."
                    }
                }
                @if can_self {
                    a.icon-btn.icon-btn-primary #add-key href="/portal/keys/new"
                        title="Create API key" aria-label="Create API key" {
                        (layout::icon_plus())
                    }
                }
            }
            @if rows.is_empty() {
                div.empty #no-keys {
                    (layout::icon_key())
                    p { "No API keys yet." }
                    @if can_self { p.muted { "Click the plus icon to create one." } }
                }
            } @else {
                div.table-wrap {
                    table.table #keys-table {
                        thead { tr {
                            th { "Name" } th { "Key ID" }
                            @if all { th { "User" } }
                            th { "Created" } th { "Last used" } th { "Expires" }
                            th.actions { span.sr-only { "Actions" } }
                        } }
                        tbody {
                            @for r in &rows {
                                tr.row-new[r.key.id == new] data-key-id=(r.key.id) {
                                    td.name-cell data-label="Name" {
                                        a.key-link href={ "/portal/keys/" (r.key.id) } { strong { (r.key.name) } }
                                        " " (super::keypage::status_badge(status(&r.key.rules, core.now())))
                                    }
                                    td data-label="Key ID" { code.key-id { (r.key.id) } }
                                    @if all { td data-label="User" { (r.owner) } }
                                    td data-label="Created" { (day(r.key.created_at)) }
                                    td data-label="Last used" {
                                        @match r.last_used {
                                            Some(t) => { (day(i64::try_from(t).unwrap_or(i64::MAX))) }
                                            None => { span.muted { "Never" } }
                                        }
                                    }
                                    td data-label="Expires" {
                                        @match effective_expiry(&r.key.rules) {
                                            Some(t) => { (day(i64::try_from(t).unwrap_or(i64::MAX))) }
                                            None => { span.muted { "Never" } }
                                        }
                                    }
                                    td.actions {
                                        @if can_delete(&s, r.key.user_id) {
                                            a.btn.btn-danger-ghost.btn-sm href={ "/portal/keys/" (r.key.id) "/delete" }
                                                data-action="delete" aria-label={ "Delete " (r.key.name) } {
                                                (layout::icon_trash()) span { "Delete" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !all {
            p.muted.small {
                "You see your own keys. Seeing every user's keys needs the permission "
                strong { (perm::KEYS_ALL_READ) } "."
            }
        }
    };
    super::html(
        StatusCode::OK,
        layout::page(&s, Nav::Keys, "API Keys", body),
    )
}

fn new_key_form(s: &Session, form: &KeyForm, error: Option<&str>) -> Markup {
    let body = html! {
        (layout::user_tabs(Nav::Keys))
        section.card.card-form {
            h2.card-title { "Create API Key" }
            p.muted {
                "Creating a key generates a Secret Key. It is shown once: Armor cannot retrieve it for you later."
            }
            @if let Some(err) = error {
                div.callout.callout-error #key-error role="alert" { (layout::icon_alert()) span { (err) } }
            }
            form.stack method="post" action="/portal/keys" {
                (layout::csrf(s))
                label.field {
                    span.field-label { "Name" }
                    input #key-name type="text" name="name" value=(form.name) required maxlength="100"
                        autofocus autocomplete="off" placeholder="e.g. Nightly backup script";
                    span.field-help.muted { "A descriptive name: where or by what the key will be used." }
                }
                details.restrictions #key-restrictions open[error.is_some()] {
                    summary { "Expiry and restrictions (optional)" }
                    div.stack { (keyform::fields(s, form)) }
                }
                div.form-actions {
                    a.btn.btn-ghost href="/portal/keys" { "Cancel" }
                    button.btn.btn-primary #create-key type="submit" { "Create Key" }
                }
            }
        }
    };
    layout::page(s, Nav::Keys, "API Keys", body)
}

/// `GET /portal/keys/new`: the plus icon's form (step 5).
pub async fn new_form(s: Session) -> Response {
    if !s.p.has(perm::KEYS_SELF_MANAGE) {
        return forbidden(&s);
    }
    super::html(StatusCode::OK, new_key_form(&s, &KeyForm::default(), None))
}

pub(super) fn forbidden(s: &Session) -> Response {
    let body = html! { (layout::user_tabs(Nav::Keys)) (explanation(s)) };
    super::html(
        StatusCode::FORBIDDEN,
        layout::page(s, Nav::Keys, "API Keys", body),
    )
}

/// `POST /portal/keys`: creates the key and shows its Key ID and Secret
/// Key, the only time the secret is shown (steps 5 to 7).
pub async fn create(
    State(core): State<AppState>,
    ClientAddr(addr): ClientAddr,
    CsrfForm { session: s, form }: CsrfForm<Vec<(String, String)>>,
) -> Response {
    let form = KeyForm::from_pairs(&form);
    let refused = |msg: &str| {
        let msg = format!("The key was not created: {msg}.");
        super::html(StatusCode::BAD_REQUEST, new_key_form(&s, &form, Some(&msg)))
    };
    let spec = match form.spec() {
        Ok(spec) => spec,
        Err(msg) => return refused(&msg),
    };
    let new = match core
        .keys
        .create_key(&s.p, s.p.user_id, &form.name, &spec, addr)
        .await
    {
        Ok(n) => n,
        Err(Error::BadRequest(msg)) => return refused(&msg),
        Err(Error::PermissionDenied(_)) => return forbidden(&s),
        Err(e) => return super::error_page(&e),
    };
    secret_page(&s, &new, None)
}

/// The one page that shows a Secret Key: after creating a key, or rolling
/// one (`rolled_from`).
pub(super) fn secret_page(
    s: &Session,
    new: &crate::core::NewKey,
    rolled_from: Option<&str>,
) -> Response {
    let id = &new.row.id;
    let body = html! {
        (layout::user_tabs(Nav::Keys))
        section.card.card-form #key-created {
            h2.card-title {
                @if rolled_from.is_some() { "API key rolled" } @else { "API key created" }
            }
            @if let Some(old) = rolled_from {
                p.muted #rolled-note {
                    "This key replaces " code { (old) } ", which keeps working until the end of its grace period."
                }
            }
            div.callout.callout-warn #secret-warning role="alert" {
                (layout::icon_alert())
                div {
                    strong { "Copy the Secret Key now: it will never be shown again." }
                    " Armor cannot retrieve it for you. If you lose the Secret Key, you must delete this API key and create a new one."
                }
            }
            dl.secret-fields {
                dt { "Name" }
                dd { (new.row.name) }
                dt { label for="new-key-id" { "Key ID" } }
                dd.copy-row {
                    code.copy-value #new-key-id { (id) }
                    button.btn.btn-secondary.btn-sm.copy type="button" data-copy="new-key-id" {
                        (layout::icon_copy()) span { "Copy" }
                    }
                }
                dt { label for="new-key-secret" { "Secret Key" } }
                dd.copy-row {
                    code.copy-value.secret #new-key-secret { (new.secret.as_str()) }
                    button.btn.btn-secondary.btn-sm.copy type="button" data-copy="new-key-secret" {
                        (layout::icon_copy()) span { "Copy" }
                    }
                }
            }
            p.muted.small {
                "Sign each request with them: "
                code { "ARMOR-PSK {Key ID}:{HMAC-SHA512 signature}:{nonce}:{timestamp}" } "."
            }
            div.form-actions {
                a.btn.btn-primary #close href={ "/portal/keys?new=" (id) } { "Close" }
            }
        }
    };
    super::html(StatusCode::OK, layout::page(s, Nav::Keys, "API Keys", body))
}

/// The key `id` in the session's account, if the user may delete it.
async fn deletable(core: &AppState, s: &Session, id: &str) -> Result<KeyRow, Response> {
    match core.keys.deletable(&s.p, id).await {
        Ok(k) => Ok(k),
        Err(Error::NotFound(_)) => Err(super::error_page(&Error::NotFound("API key"))),
        Err(Error::PermissionDenied(_)) => Err(forbidden(s)),
        Err(e) => Err(super::error_page(&e)),
    }
}

/// `GET /portal/keys/{id}/delete`: asks for confirmation.
pub async fn confirm_delete(
    State(core): State<AppState>,
    s: Session,
    Path(id): Path<String>,
) -> Response {
    let key = match deletable(&core, &s, &id).await {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    let body = html! {
        (layout::user_tabs(Nav::Keys))
        section.card.card-form #confirm-delete-card {
            h2.card-title { "Delete API key?" }
            dl.facts {
                dt { "Name" } dd { strong { (key.name) } }
                dt { "Key ID" } dd { code { (key.id) } }
                dt { "Created" } dd { (super::when(key.created_at)) }
            }
            div.callout.callout-error role="note" {
                (layout::icon_alert())
                span { "Requests signed with this key are refused as soon as it is deleted. This cannot be undone." }
            }
            form method="post" action={ "/portal/keys/" (key.id) "/delete" } {
                (layout::csrf(&s))
                input type="hidden" name="confirm" value="yes";
                div.form-actions {
                    a.btn.btn-ghost href="/portal/keys" { "Cancel" }
                    button.btn.btn-danger #confirm-delete type="submit" { "Delete key" }
                }
            }
        }
    };
    super::html(
        StatusCode::OK,
        layout::page(&s, Nav::Keys, "API Keys", body),
    )
}

#[derive(Deserialize)]
pub struct DeleteForm {
    confirm: Option<String>,
}

/// `POST /portal/keys/{id}/delete`: deletes once confirmed.
pub async fn delete(
    State(core): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Path(id): Path<String>,
    CsrfForm { session: s, form }: CsrfForm<DeleteForm>,
) -> Response {
    if form.confirm.as_deref() != Some("yes") {
        return Redirect::to(&format!("/portal/keys/{}/delete", urlencode(&id))).into_response();
    }
    let key = match deletable(&core, &s, &id).await {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    match core.keys.delete_key(&s.p, key.user_id, &key.id, addr).await {
        Ok(()) => Redirect::to("/portal/keys?notice=deleted").into_response(),
        Err(Error::PermissionDenied(_)) => forbidden(&s),
        Err(e) => super::error_page(&e),
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
