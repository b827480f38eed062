//! Sign-in and sign-out. Signing in is the API's first step
//! (`Sessions::authorize`), then `Sessions::open_session` exchanges the code for a
//! portal session (not an FH-AUTH token) kept in the session cookie; a
//! wrong password and a locked login get the API's one answer, and a user
//! with a second factor is asked for its code.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout;
use super::session::{
    clear_cookie, cookie, csrf_refused, is_tls, same, set_cookie, CsrfForm, Session,
    ACCOUNT_COOKIE, CSRF_FIELD, LOGIN_CSRF_COOKIE, PORTAL_PATH, SESSION_COOKIE,
};
use crate::error::Error;
use crate::web::auth::ClientAddr;
use crate::web::AppState;

const LOGIN_PATH: &str = "/portal/login";

#[derive(Default)]
struct FormState<'a> {
    email: &'a str,
    error: Option<&'a str>,
    /// The user has a second factor: ask for its code.
    mfa: bool,
}

fn login_page(csrf: &str, st: &FormState<'_>) -> Markup {
    layout::bare(
        "Sign in",
        html! {
            section.card.card-narrow.login-card {
                h1.card-title { "Sign in" }
                p.muted { "Manage your account's users and API keys." }
                @if let Some(err) = st.error {
                    div.callout.callout-error id="login-error" role="alert" {
                        (layout::icon_alert()) span { (err) }
                    }
                }
                form.stack method="post" action=(LOGIN_PATH) autocomplete="on" {
                    input type="hidden" name=(CSRF_FIELD) value=(csrf);
                    label.field {
                        span.field-label { "Email" }
                        input #email type="email" name="email" value=(st.email) required
                            autocomplete="username" autofocus[st.email.is_empty()] maxlength="254";
                    }
                    label.field {
                        span.field-label { "Password" }
                        input #password type="password" name="password" required
                            autocomplete="current-password" maxlength="1024"
                            autofocus[!st.email.is_empty() && !st.mfa];
                    }
                    @if st.mfa {
                        label.field {
                            span.field-label { "Verification code" }
                            input #mfa-code type="text" name="code" required autofocus
                                inputmode="numeric" autocomplete="one-time-code" maxlength="16"
                                placeholder="123456";
                            span.field-help.muted {
                                "Your account has a second factor: enter your password again and the code from your authenticator app or text message."
                            }
                        }
                    }
                    button.btn.btn-primary.btn-block #sign-in type="submit" { "Sign in" }
                }
                p.field-help.muted {
                    "Repeated wrong passwords lock a login for a while; an administrator can unlock it."
                }
            }
        },
    )
}

fn login_response(status: StatusCode, headers: &HeaderMap, st: &FormState<'_>) -> Response {
    // A fresh double-submit token for each form shown.
    let csrf = hex::encode(crate::crypto::random_16());
    let mut resp = super::html(status, login_page(&csrf, st));
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_CSRF_COOKIE, &csrf, LOGIN_PATH, is_tls(headers)),
    );
    resp
}

/// `GET /portal/login`: the form, or on to the portal when signed in.
pub async fn form(State(core): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        if Session::resolve(&core, &token, None).await.is_ok() {
            return Redirect::to("/portal/keys").into_response();
        }
    }
    login_response(StatusCode::OK, &headers, &FormState::default())
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
    #[serde(rename = "_csrf", default)]
    csrf: String,
}

/// `POST /portal/login`.
pub async fn submit(
    State(core): State<AppState>,
    ClientAddr(addr): ClientAddr,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let bytes = match crate::web::auth::read_body(body, core.config.max_body).await {
        Ok(b) => b,
        Err(e) => return super::error_page(&e),
    };
    let Ok(f) = serde_urlencoded::from_bytes::<LoginForm>(&bytes) else {
        return login_response(
            StatusCode::BAD_REQUEST,
            &headers,
            &FormState {
                error: Some("The form could not be read."),
                ..Default::default()
            },
        );
    };
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if !same(Some(&f.csrf), &expected) {
        return csrf_refused();
    }
    let code = Some(f.code.trim()).filter(|c| !c.is_empty());
    let result = match core
        .sessions
        .authorize(&f.email, &f.password, code, addr.clone())
        .await
    {
        Ok(code) => core.sessions.open_session(&code, addr).await,
        Err(e) => Err(e),
    };
    let token = match result {
        Ok(t) => t,
        Err(e) => {
            let (status, _, text) = crate::web::error::classify(&e);
            let mfa = matches!(e, Error::MfaRequired | Error::InvalidMfaCode);
            let error = match e {
                Error::MfaRequired => "Enter the verification code of your second factor.",
                _ => text,
            };
            if matches!(e, Error::Internal(_) | Error::Config(_)) {
                tracing::error!(error = %e, "portal sign-in failed");
            }
            return login_response(
                status,
                &headers,
                &FormState {
                    email: f.email.trim(),
                    error: Some(error),
                    mfa,
                },
            );
        }
    };
    let tls = is_tls(&headers);
    let mut resp = Redirect::to("/portal/account").into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &token, PORTAL_PATH, tls),
    );
    h.append(
        header::SET_COOKIE,
        clear_cookie(LOGIN_CSRF_COOKIE, LOGIN_PATH, tls),
    );
    h.append(
        header::SET_COOKIE,
        clear_cookie(ACCOUNT_COOKIE, PORTAL_PATH, tls),
    );
    resp
}

#[derive(Deserialize)]
pub struct Empty {}

/// `POST /portal/logout`: ends the session and drops the cookies.
pub async fn logout(
    State(core): State<AppState>,
    headers: HeaderMap,
    CsrfForm { session, .. }: CsrfForm<Empty>,
) -> Response {
    if let Err(e) = core
        .sessions
        .close_session(&session.p, &session.session_hash)
        .await
    {
        return super::error_page(&e);
    }
    let tls = is_tls(&headers);
    let mut resp = Redirect::to(LOGIN_PATH).into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        clear_cookie(SESSION_COOKIE, PORTAL_PATH, tls),
    );
    h.append(
        header::SET_COOKIE,
        clear_cookie(ACCOUNT_COOKIE, PORTAL_PATH, tls),
    );
    resp
}
