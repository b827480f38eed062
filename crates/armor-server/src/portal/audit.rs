//! The account's audit log, filterable by event, user and date, newest
//! first, a page at a time.

use std::collections::{BTreeSet, HashMap};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::layout::{self, Nav};
use super::session::Session;
use crate::core::perm;
use crate::store::AuditFilter;
use crate::web::AppState;

const PAGE: i64 = 50;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    event: Option<String>,
    user: Option<String>,
    /// `YYYY-MM-DD`, UTC, inclusive.
    since: Option<String>,
    until: Option<String>,
    before: Option<i64>,
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` as the Unix second its day starts.
fn day_start(text: &str) -> Option<i64> {
    let mut it = text.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400)
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// `GET /portal/audit`.
pub async fn page(
    State(core): State<AppState>,
    s: Session,
    Query(q): Query<AuditQuery>,
) -> Response {
    if !s.p.has(perm::AUDIT_READ) {
        let body = layout::missing_permissions(
            &s,
            "read the account's audit log",
            &[(perm::AUDIT_READ, "read the account's audit log")],
            None,
        );
        return super::html(
            StatusCode::FORBIDDEN,
            layout::page(&s, Nav::Audit, "Audit Log", body),
        );
    }
    let users = match core.access.member_emails(&s.p).await {
        Ok(u) => u,
        Err(e) => return super::error_page(&e),
    };
    let emails: HashMap<i64, String> = users.iter().cloned().collect();
    let event = non_empty(&q.event).map(str::to_owned);
    let user = non_empty(&q.user).and_then(|u| u.parse::<i64>().ok());
    let since = non_empty(&q.since).and_then(day_start);
    let until = non_empty(&q.until).and_then(day_start).map(|t| t + 86_399);
    let filter = AuditFilter {
        account_id: s.p.account_id,
        user_id: user,
        event: event.clone(),
        since,
        until,
        before: q.before,
        limit: PAGE + 1,
    };
    let mut rows = match core.audit.query(&s.p, filter).await {
        Ok(r) => r,
        Err(e) => return super::error_page(&e),
    };
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    // The events this account has seen, for the filter's choices.
    let mut events: BTreeSet<String> = match core
        .audit
        .query(
            &s.p,
            AuditFilter {
                account_id: s.p.account_id,
                limit: 2000,
                ..Default::default()
            },
        )
        .await
    {
        Ok(r) => r.into_iter().map(|r| r.event).collect(),
        Err(e) => return super::error_page(&e),
    };
    if let Some(e) = &event {
        events.insert(e.clone());
    }
    let older = rows.last().filter(|_| more).map(|r| {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for (k, v) in [
            ("event", &q.event),
            ("user", &q.user),
            ("since", &q.since),
            ("until", &q.until),
        ] {
            if let Some(v) = non_empty(v) {
                pairs.push((k, v.to_owned()));
            }
        }
        pairs.push(("before", r.id.to_string()));
        format!(
            "/portal/audit?{}",
            serde_urlencoded::to_string(&pairs).unwrap_or_default()
        )
    });
    let actor = |id: Option<i64>| match id {
        Some(id) => emails
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("user #{id}")),
        None => "—".to_owned(),
    };
    let body = html! {
        section.card {
            form.filter-form #audit-filter method="get" action="/portal/audit" {
                label.field { span.field-label { "Event" }
                    select name="event" #filter-event {
                        option value="" { "All events" }
                        @for e in &events { option value=(e) selected[event.as_deref() == Some(e.as_str())] { (e) } }
                    }
                }
                label.field { span.field-label { "User" }
                    select name="user" #filter-user {
                        option value="" { "All users" }
                        @for (id, email) in &users {
                            option value=(id) selected[user == Some(*id)] { (email) }
                        }
                    }
                }
                label.field { span.field-label { "From" }
                    input type="date" name="since" value=(non_empty(&q.since).unwrap_or_default()); }
                label.field { span.field-label { "To" }
                    input type="date" name="until" value=(non_empty(&q.until).unwrap_or_default()); }
                div.filter-actions {
                    button.btn.btn-primary type="submit" { "Filter" }
                    a.btn.btn-ghost href="/portal/audit" { "Clear" }
                }
            }
        }
        section.card.card-table {
            @if rows.is_empty() {
                div.empty { (layout::icon_list()) p { "No entries match." } }
            } @else {
                div.table-wrap {
                    table.table #audit-table {
                        thead { tr {
                            th { "Time" } th { "Event" } th { "By" } th { "Credential" }
                            th { "Target" } th { "Address" } th { "Detail" }
                        } }
                        tbody {
                            @for r in &rows {
                                tr {
                                    td data-label="Time" { span.nowrap { (super::when(r.at)) } }
                                    td data-label="Event" { span.badge.badge-event { (r.event) } }
                                    td data-label="By" { (actor(r.actor_id)) }
                                    td data-label="Credential" { code.small { (r.credential) } }
                                    td data-label="Target" { @if let Some(t) = &r.target { code.small { (t) } } }
                                    td data-label="Address" { (r.address.as_deref().unwrap_or("")) }
                                    td data-label="Detail" { span.small { (r.detail.as_deref().unwrap_or("")) } }
                                }
                            }
                        }
                    }
                }
                @if let Some(href) = older {
                    div.pager { a.btn.btn-secondary href=(href) { "Older entries" } }
                }
            }
        }
    };
    super::html(
        StatusCode::OK,
        layout::page(&s, Nav::Audit, "Audit Log", body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_start_their_day() {
        assert_eq!(day_start("1970-01-01"), Some(0));
        assert_eq!(day_start("2018-06-04"), Some(1_528_070_400));
        assert_eq!(day_start("2000-02-29"), Some(951_782_400));
        assert_eq!(day_start("junk"), None);
        assert_eq!(day_start("2020-13-01"), None);
    }
}
