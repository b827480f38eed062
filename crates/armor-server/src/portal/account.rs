//! Account: the account the portal acts in, the user's role and
//! permissions there, and a switch for users of several accounts.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{self, Nav};
use super::session::{is_tls, set_cookie, CsrfForm, Session, ACCOUNT_COOKIE, PORTAL_PATH};
use crate::core::perm;
use crate::store::Role;

/// What each permission lets its holder do.
const PERMISSIONS: [(&str, &str); 6] = [
    (
        perm::KEYS_SELF_MANAGE,
        "Create, list and delete your own API keys",
    ),
    (
        perm::KEYS_ALL_READ,
        "See the API keys of every user in the account",
    ),
    (
        perm::KEYS_ALL_DELETE,
        "Delete the API keys of any user in the account",
    ),
    (perm::USERS_READ, "See the account's users"),
    (
        perm::USERS_MANAGE,
        "Invite, enable, disable and unlock users",
    ),
    (perm::AUDIT_READ, "Read the account's audit log"),
];

/// `GET /portal/account`.
pub async fn page(s: Session) -> Response {
    let a = &s.account;
    let body = html! {
        div.grid-2 {
            section.card {
                h2.card-title { "Account" }
                dl.facts {
                    dt { "Name" } dd #account-name { (a.name) }
                    dt { "Account ID" } dd { code { (a.id) } }
                    dt { "Status" } dd { span.badge.badge-ok[a.status.eq_ignore_ascii_case("active")] { (a.status) } }
                    @if let Some(parent) = a.parent_id {
                        dt { "Parent account" } dd { code { (parent) } }
                    }
                    dt { "Your role" } dd { (s.role.as_ref().map_or("(none)", Role::as_str)) }
                }
                @if s.accounts.len() > 1 {
                    form.row-form method="post" action="/portal/account" {
                        (layout::csrf(&s))
                        label.field.grow {
                            span.field-label { "Switch account" }
                            select name="account" #account-switch {
                                @for other in &s.accounts {
                                    option value=(other.id) selected[other.id == a.id] {
                                        (other.name) " (#" (other.id) ")"
                                    }
                                }
                            }
                        }
                        button.btn.btn-secondary type="submit" { "Switch" }
                    }
                }
            }
            section.card {
                h2.card-title { "Manage" }
                div.tiles {
                    a.tile #tile-users href="/portal/users" {
                        (layout::icon_users())
                        span.tile-title { "Users" }
                        span.tile-text.muted { "People in this account, their status and API keys" }
                    }
                    a.tile #tile-keys href="/portal/keys" {
                        (layout::icon_key())
                        span.tile-title { "API Keys" }
                        span.tile-text.muted { "Keys that sign requests to the Armor API (ARMOR-PSK)" }
                    }
                    a.tile #tile-audit href="/portal/audit" {
                        (layout::icon_list())
                        span.tile-title { "Audit Log" }
                        span.tile-text.muted { "Sign-ins, key and user changes" }
                    }
                }
            }
        }
        section.card {
            h2.card-title { "Your permissions in this account" }
            ul.perm-list.perm-grid #my-permissions {
                @for (name, does) in PERMISSIONS {
                    @let held = s.p.has(name);
                    li.perm.held[held].missing[!held] {
                        span.perm-mark aria-hidden="true" { @if held { "✓" } @else { "–" } }
                        span.perm-name { (name) }
                        span.perm-does.muted { (does) }
                    }
                }
            }
        }
    };
    super::html(
        StatusCode::OK,
        layout::page(&s, Nav::Account, "Account", body),
    )
}

#[derive(Deserialize)]
pub struct SwitchForm {
    account: i64,
}

/// `POST /portal/account`: act in another of the user's accounts.
pub async fn switch(
    headers: HeaderMap,
    CsrfForm { session, form }: CsrfForm<SwitchForm>,
) -> Response {
    if !session.accounts.iter().any(|a| a.id == form.account) {
        return super::error_page(&crate::error::Error::InvalidAccountContext);
    }
    let mut resp = Redirect::to("/portal/account").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            ACCOUNT_COOKIE,
            &form.account.to_string(),
            PORTAL_PATH,
            is_tls(&headers),
        ),
    );
    resp
}
