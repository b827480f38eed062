//! The portal's page frame: head, left-side navigation, top bar; and the
//! pieces pages share (permission explanations, hidden CSRF fields, icons).

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::session::{Session, CSRF_FIELD};
use crate::core::perm;
use crate::store::Role;

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Account,
    Users,
    Keys,
    Audit,
}

fn head(title: &str) -> Markup {
    let v = super::asset_version();
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light";
            title { (title) " · Armor Management Portal" }
            link rel="icon" href={ "/portal/static/logo.svg?v=" (v) } type="image/svg+xml";
            link rel="stylesheet" href={ "/portal/static/portal.css?v=" (v) };
            script src={ "/portal/static/portal.js?v=" (v) } defer {}
        }
    }
}

fn brand() -> Markup {
    html! {
        img.brand-logo src={ "/portal/static/logo.svg?v=" (super::asset_version()) } alt="" width="28" height="28";
        span.brand-text { span.brand-name { "Armor" } span.brand-sub { "Management Portal" } }
    }
}

/// The hidden CSRF field of a form.
pub fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(s.csrf); }
}

/// A signed-in page: left-side navigation (Account, then its Users, API
/// Keys and Audit Log), top bar with the user and account, then `body`.
pub fn page(s: &Session, nav: Nav, title: &str, body: Markup) -> Markup {
    let item = |id: &str, href: &str, label: &str, icon: Markup, this: Nav| {
        let current = nav == this;
        html! {
            a.nav-item.current[current] id=(id) href=(href) aria-current=[current.then_some("page")] {
                (icon) span { (label) }
            }
        }
    };
    let name = full_name(&s.user.first_name, &s.user.last_name, &s.user.email);
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                div.shell {
                    aside.sidebar {
                        a.brand href="/portal/account" { (brand()) }
                        nav.nav aria-label="Main" {
                            div.nav-group {
                                (item("nav-account", "/portal/account", "Account", icon_building(), Nav::Account))
                                div.nav-sub {
                                    (item("nav-users", "/portal/users", "Users", icon_users(), Nav::Users))
                                    (item("nav-keys", "/portal/keys", "API Keys", icon_key(), Nav::Keys))
                                    (item("nav-audit", "/portal/audit", "Audit Log", icon_list(), Nav::Audit))
                                }
                            }
                        }
                        div.sidebar-foot {
                            span.muted { "Account" }
                            span.account-name { (s.account.name) " " span.muted { "#" (s.account.id) } }
                        }
                    }
                    div.main {
                        header.topbar {
                            div.crumbs {
                                span.muted { "Account" }
                                @if nav != Nav::Account { span.sep { "/" } span { (title) } }
                            }
                            div.who {
                                span.avatar aria-hidden="true" { (initials(&name)) }
                                span.who-text {
                                    span.who-name { (name) }
                                    @if name != s.user.email { span.who-mail.muted { (s.user.email) } }
                                }
                                form.inline method="post" action="/portal/logout" {
                                    (csrf(s))
                                    button.btn.btn-ghost.btn-sm type="submit" id="sign-out" { "Sign out" }
                                }
                            }
                        }
                        main.content id="main" {
                            h1.page-title { (title) }
                            (body)
                        }
                    }
                }
            }
        }
    }
}

/// A page outside the signed-in frame (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare {
                main.bare-main {
                    div.bare-brand { (brand()) }
                    (body)
                    p.bare-foot.muted { "Armor API key management" }
                }
            }
        }
    }
}

/// A one-message page with a link back into the portal.
pub fn message(title: &str, text: &str) -> Markup {
    bare(
        title,
        html! {
            section.card.card-narrow {
                h1.card-title { (title) }
                p { (text) }
                p { a.btn.btn-primary href="/portal/keys" { "Back to the portal" } }
            }
        },
    )
}

/// The tabs of the Users screen: Users, and its API Keys.
pub fn user_tabs(current: Nav) -> Markup {
    html! {
        nav.tabs aria-label="Users" {
            a.tab.current[current == Nav::Users] id="tab-users" href="/portal/users"
                aria-current=[(current == Nav::Users).then_some("page")] { "Users" }
            a.tab.current[current == Nav::Keys] id="tab-keys" href="/portal/keys"
                aria-current=[(current == Nav::Keys).then_some("page")] { "API Keys" }
        }
    }
}

/// What each key permission allows, in the vendor's words and order.
pub const KEY_PERMISSIONS: [(&str, &str); 3] = [
    (
        perm::KEYS_ALL_READ,
        "see the API keys of every user in the account",
    ),
    (
        perm::KEYS_ALL_DELETE,
        "delete the API keys of any user in the account",
    ),
    (
        perm::KEYS_SELF_MANAGE,
        "create, list and delete your own API keys",
    ),
];

/// Why a screen is empty: the permissions it needs, each marked as held or
/// missing (the vendor's troubleshooting section).
pub fn missing_permissions(
    s: &Session,
    what: &str,
    needed: &[(&str, &str)],
    footnote: Option<&str>,
) -> Markup {
    html! {
        section.callout.callout-warn id="permission-help" role="note" {
            h2.callout-title { (icon_lock()) "You may not have permissions to use this feature" }
            p {
                "You cannot " (what) " in the account " strong { (s.account.name) }
                " with your role " strong { (s.role.as_ref().map_or("(none)", Role::as_str)) } "."
                " You must have the following permissions enabled:"
            }
            ul.perm-list {
                @for (name, does) in needed {
                    @let held = s.p.has(name);
                    li.perm.held[held].missing[!held] {
                        span.perm-mark aria-hidden="true" { @if held { "✓" } @else { "✕" } }
                        span.perm-name { (name) }
                        span.perm-does.muted { " — " (does) }
                        span.badge.badge-ok[held].badge-bad[!held] { @if held { "you have it" } @else { "missing" } }
                    }
                }
            }
            p.muted {
                "To learn how to update your permissions, see Roles and Permissions: an account administrator (someone with "
                strong { (perm::USERS_MANAGE) } ") can change your role."
                @if let Some(f) = footnote { " " (f) }
            }
        }
    }
}

pub fn full_name(first: &str, last: &str, email: &str) -> String {
    let n = format!("{} {}", first.trim(), last.trim());
    let n = n.trim();
    if n.is_empty() {
        email.to_owned()
    } else {
        n.to_owned()
    }
}

fn initials(name: &str) -> String {
    name.split_whitespace()
        .filter_map(|w| w.chars().next())
        .take(2)
        .flat_map(char::to_uppercase)
        .collect()
}

fn svg(path: &str) -> Markup {
    html! {
        svg.icon viewBox="0 0 24 24" width="18" height="18" fill="none" stroke="currentColor"
            stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true" focusable="false" {
            (PreEscaped(path))
        }
    }
}

pub fn icon_plus() -> Markup {
    svg(r#"<path d="M12 5v14M5 12h14"/>"#)
}
pub fn icon_key() -> Markup {
    svg(r#"<circle cx="7.5" cy="15.5" r="4.5"/><path d="M10.7 12.3 20 3M16 7l3 3M14 9l2 2"/>"#)
}
pub fn icon_users() -> Markup {
    svg(
        r#"<circle cx="9" cy="8" r="4"/><path d="M2 21a7 7 0 0 1 14 0M16 4a4 4 0 0 1 0 8M22 21a7 7 0 0 0-4-6.3"/>"#,
    )
}
pub fn icon_building() -> Markup {
    svg(
        r#"<rect x="4" y="3" width="16" height="18" rx="1"/><path d="M9 7h1M14 7h1M9 11h1M14 11h1M9 15h1M14 15h1M10 21v-3h4v3"/>"#,
    )
}
pub fn icon_list() -> Markup {
    svg(r#"<path d="M8 6h13M8 12h13M8 18h13M3 6h.01M3 12h.01M3 18h.01"/>"#)
}
pub fn icon_lock() -> Markup {
    svg(r#"<rect x="4" y="11" width="16" height="10" rx="2"/><path d="M8 11V7a4 4 0 0 1 8 0v4"/>"#)
}
pub fn icon_copy() -> Markup {
    svg(
        r#"<rect x="9" y="9" width="12" height="12" rx="2"/><path d="M5 15H4a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1h10a1 1 0 0 1 1 1v1"/>"#,
    )
}
pub fn icon_trash() -> Markup {
    svg(r#"<path d="M3 6h18M8 6V4h8v2M6 6l1 15h10l1-15"/>"#)
}
pub fn icon_alert() -> Markup {
    svg(r#"<path d="M12 3 2 21h20L12 3z"/><path d="M12 10v5M12 18h.01"/>"#)
}
