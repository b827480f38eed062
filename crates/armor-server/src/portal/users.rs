//! Users: the account's users with their status and lock state; for
//! administrators (Users Manage) invite, enable/disable and unlock.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{self, Nav};
use super::session::{CsrfForm, Session};
use crate::core::{perm, UserEdit};
use crate::error::Error;
use crate::store::{Role, UserStatus};
use crate::web::auth::ClientAddr;
use crate::web::AppState;

/// Roles an administrator may give an invited user.
const ROLES: [Role; 3] = [Role::User, Role::ReadOnly, Role::AccountOwner];

#[derive(Deserialize)]
pub struct UsersQuery {
    notice: Option<String>,
}

fn notice_text(n: &str) -> Option<&'static str> {
    Some(match n {
        "invited" => "The user was created and their invitation sent.",
        "reinvited" => "A new invitation was sent.",
        "enabled" => "The user was enabled.",
        "disabled" => "The user was disabled: their sessions and API keys are refused.",
        "unlocked" => "The login was unlocked.",
        _ => return None,
    })
}

fn status_badge(status: &UserStatus) -> &'static str {
    match status {
        UserStatus::Active => "badge-ok",
        UserStatus::Invited => "badge-info",
        _ => "badge-bad",
    }
}

/// `GET /portal/users`.
pub async fn page(
    State(core): State<AppState>,
    s: Session,
    Query(q): Query<UsersQuery>,
) -> Response {
    if !s.p.has(perm::USERS_READ) {
        let body = html! {
            (layout::user_tabs(Nav::Users))
            (layout::missing_permissions(
                &s,
                "see the account's users",
                &[(perm::USERS_READ, "see the account's users and their status")],
                Some("Your own API keys are under the API Keys tab."),
            ))
        };
        return super::html(
            StatusCode::FORBIDDEN,
            layout::page(&s, Nav::Users, "Users", body),
        );
    }
    let users = match core.access.users(&s.p).await {
        Ok(u) => u,
        Err(e) => return super::error_page(&e),
    };
    // Members whose home is another account are listed too (as `GET
    // /users` lists them), with their lock (which is the user's, in every
    // account); they are administered in their home account, so they get
    // no actions here.
    let mut rows = Vec::new();
    for (u, role) in users {
        let locked = match core.users.locked_until(u.id).await {
            Ok(l) => l,
            Err(e) => return super::error_page(&e),
        };
        rows.push((u, role, locked));
    }
    let manage = s.p.has(perm::USERS_MANAGE);
    let body = html! {
        (layout::user_tabs(Nav::Users))
        @if let Some(text) = q.notice.as_deref().and_then(notice_text) {
            div.callout.callout-ok #notice role="status" { (text) }
        }
        section.card.card-table {
            div.card-head {
                div {
                    h2.card-title { "Users" }
                    p.card-sub.muted { "People who can sign in to " (s.account.name) "." }
                }
            }
            div.table-wrap {
                table.table #users-table {
                    thead { tr {
                        th { "Name" } th { "Email" } th { "Role" } th { "Status" } th { "Sign-in" }
                        @if manage { th.actions { span.sr-only { "Actions" } } }
                    } }
                    tbody {
                        @for (u, role, locked) in &rows {
                            tr data-user-id=(u.id) {
                                td data-label="Name" {
                                    strong { (layout::full_name(&u.first_name, &u.last_name, &u.email)) }
                                    @if u.id == s.p.user_id { " " span.badge { "you" } }
                                }
                                td data-label="Email" { (u.email) }
                                td data-label="Role" { (role) }
                                td data-label="Status" { span.badge.(status_badge(&u.status)) { (u.status) } }
                                td data-label="Sign-in" {
                                    @match locked {
                                        Some(until) => {
                                            span.badge.badge-bad { "Locked" }
                                            " " span.muted.small { "until " (super::when(i64::try_from(*until).unwrap_or(i64::MAX))) }
                                        }
                                        None => { span.muted { "Not locked" } }
                                    }
                                }
                                @if manage && u.account_id != s.p.account_id {
                                    td.actions { span.muted.small { "Administered in their home account" } }
                                } @else if manage {
                                    td.actions {
                                        div.action-row {
                                            @if locked.is_some() {
                                                (action_button(&s, u.id, "unlock", "Unlock", "btn-secondary"))
                                            }
                                            @if u.status == UserStatus::Invited {
                                                (action_button(&s, u.id, "invite", "Resend invitation", "btn-ghost"))
                                            }
                                            @if u.id != s.p.user_id {
                                                @if u.status == UserStatus::Active {
                                                    (action_button(&s, u.id, "disable", "Disable", "btn-danger-ghost"))
                                                } @else if u.status == UserStatus::Disabled {
                                                    (action_button(&s, u.id, "enable", "Enable", "btn-secondary"))
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
        }
        @if manage {
            section.card.card-form #invite {
                h2.card-title { "Invite a user" }
                p.muted { "They get an email with an activation code to choose their password." }
                form.grid-form method="post" action="/portal/users" {
                    (layout::csrf(&s))
                    label.field { span.field-label { "Email" }
                        input #invite-email type="email" name="email" required maxlength="254"; }
                    label.field { span.field-label { "First name" }
                        input type="text" name="first_name" required maxlength="100"; }
                    label.field { span.field-label { "Last name" }
                        input type="text" name="last_name" required maxlength="100"; }
                    label.field { span.field-label { "Role" }
                        select name="role" {
                            @for r in &ROLES { option value=(r) selected[*r == Role::User] { (r) } }
                        }
                    }
                    div.form-actions { button.btn.btn-primary #invite-submit type="submit" { "Invite" } }
                }
            }
        } @else {
            p.muted.small {
                "Inviting, enabling, disabling and unlocking users needs the permission "
                strong { (perm::USERS_MANAGE) } "."
            }
        }
    };
    super::html(StatusCode::OK, layout::page(&s, Nav::Users, "Users", body))
}

fn action_button(s: &Session, id: i64, action: &str, label: &str, class: &str) -> maud::Markup {
    html! {
        form.inline method="post" action={ "/portal/users/" (id) "/" (action) } {
            (layout::csrf(s))
            button.btn.btn-sm.(class) type="submit" data-action=(action) { (label) }
        }
    }
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    role: String,
}

/// `POST /portal/users`: creates an invited user.
pub async fn invite(
    State(core): State<AppState>,
    ClientAddr(addr): ClientAddr,
    CsrfForm { session: s, form }: CsrfForm<InviteForm>,
) -> Response {
    let edit = UserEdit {
        email: Some(form.email),
        first_name: Some(form.first_name),
        last_name: Some(form.last_name),
        role: Some(form.role).filter(|r| !r.is_empty()),
    };
    match core.users.create_user(&s.p, &edit, addr).await {
        Ok(_) => Redirect::to("/portal/users?notice=invited").into_response(),
        Err(e) => super::error_page(&e),
    }
}

#[derive(Deserialize)]
pub struct NoFields {}

/// `POST /portal/users/{id}/{action}`: enable, disable, unlock, invite.
pub async fn action(
    State(core): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Path((id, action)): Path<(String, String)>,
    CsrfForm { session: s, .. }: CsrfForm<NoFields>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return super::error_page(&Error::NotFound("user"));
    };
    let result = match action.as_str() {
        "enable" | "disable" => core
            .users
            .set_user_enabled(&s.p, id, action == "enable", addr)
            .await
            .map(|_| {
                if action == "enable" {
                    "enabled"
                } else {
                    "disabled"
                }
            }),
        "invite" => core
            .users
            .invite(&s.p, id, addr)
            .await
            .map(|()| "reinvited"),
        "unlock" => match core.access.user_in_account(&s.p, id).await {
            Ok((u, _)) => core
                .users
                .unlock(&s.p, s.p.account_id, &u.email, addr)
                .await
                .map(|_| "unlocked"),
            Err(e) => Err(e),
        },
        _ => return super::not_found().await,
    };
    match result {
        Ok(notice) => Redirect::to(&format!("/portal/users?notice={notice}")).into_response(),
        Err(e) => super::error_page(&e),
    }
}
