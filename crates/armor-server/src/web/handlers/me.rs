//! `GET /me`: the caller's profile, its accounts and permissions in each.
//!
//! What depends only on the profile is rendered once per cached
//! [`Profile`] (a change to the user makes a new one) and kept in it; each
//! answer writes the caller's own parts around those bytes.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;

use super::{json_answer, AccountJson, ApiResult};
use crate::core::{Profile, Rendered};
use crate::web::auth::Caller;
use crate::web::AppState;

pub async fn me(State(core): State<AppState>, Caller(p): Caller) -> ApiResult<Me> {
    let profile = core.access.profile(p.user_id).await?;
    // A key with its own permission list shows what it may do: in each
    // account, its user's permissions that the list also names.
    let narrowed_to = match &p.via {
        crate::core::Via::ApiKey {
            key_permissions, ..
        } => key_permissions.clone(),
        crate::core::Via::Password { .. } => None,
    };
    Ok(Me {
        profile,
        narrowed_to,
        account_context: p.account_id,
        authentication: p.via.scheme(),
    })
}

/// The body of `GET /me`: the cached profile's rendering and the caller's parts.
pub struct Me {
    profile: Arc<Profile>,
    narrowed_to: Option<Arc<[String]>>,
    account_context: i64,
    authentication: &'static str,
}

impl Me {
    /// The answer. What depends only on the profile is rendered once per
    /// profile (a changed profile is a new one); the caller's parts are
    /// written around it.
    fn to_json(&self) -> Vec<u8> {
        let p = &*self.profile;
        let r = p.rendered.get_or_init(|| render_profile(p));
        let mut out = Vec::with_capacity(r.common.len() + r.unnarrowed.len() + 96);
        out.extend_from_slice(&r.common);
        match self.narrowed_to.as_deref() {
            None => out.extend_from_slice(&r.unnarrowed),
            // Writes to a Vec cannot fail.
            Some(key) => {
                let _ = serde_json::to_writer(&mut out, &Permissions(p, Some(key)));
            }
        }
        out.extend_from_slice(br#","features":[],"accountContext":"#);
        let _ = serde_json::to_writer(&mut out, &self.account_context);
        // "ARMOR-PSK" or "FH-AUTH": nothing to escape.
        out.extend_from_slice(br#","authentication":""#);
        out.extend_from_slice(self.authentication.as_bytes());
        out.extend_from_slice(b"\"}");
        out
    }
}

impl axum::response::IntoResponse for Me {
    fn into_response(self) -> Response {
        json_answer(self.to_json())
    }
}

/// `{"user":…,"accounts":[…],"permissions":` and the permissions object as
/// an unnarrowed caller sees it.
fn render_profile(p: &Profile) -> Rendered {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct User<'a> {
        r#type: &'static str,
        id: i64,
        username: &'a str,
        first_name: &'a str,
        last_name: &'a str,
        links: Links,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Links {
        user_id: i64,
    }
    let user = User {
        r#type: "user",
        id: p.user_id,
        username: &p.email,
        first_name: &p.first_name,
        last_name: &p.last_name,
        links: Links { user_id: p.user_id },
    };
    // Writes to a Vec cannot fail.
    let mut common = br#"{"user":"#.to_vec();
    let _ = serde_json::to_writer(&mut common, &user);
    common.extend_from_slice(br#","accounts":"#);
    let accounts: Vec<_> = p.accounts.iter().map(AccountJson).collect();
    let _ = serde_json::to_writer(&mut common, &accounts);
    common.extend_from_slice(br#","permissions":"#);
    let unnarrowed = serde_json::to_vec(&Permissions(p, None)).unwrap_or_default();
    Rendered {
        common: common.into(),
        unnarrowed: unnarrowed.into(),
    }
}

/// The permissions per account (keyed by account id), each narrowed to a
/// key's own list when it has one.
struct Permissions<'a>(&'a Profile, Option<&'a [String]>);

struct Narrowed<'a>(&'a [String], Option<&'a [String]>);

impl Serialize for Narrowed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.1 {
            None => s.collect_seq(self.0),
            Some(key) => s.collect_seq(self.0.iter().filter(|p| key.contains(p))),
        }
    }
}

impl Serialize for Permissions<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            self.0
                .accounts
                .iter()
                .zip(&self.0.permissions)
                .map(|(a, p)| (a.id.to_string(), Narrowed(p, self.1))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AccountRow;
    use std::sync::OnceLock;

    fn profile() -> Arc<Profile> {
        let account = |id, parent| AccountRow {
            id,
            name: format!("a\"{id}\\"),
            status: "active".into(),
            parent_id: parent,
        };
        Arc::new(Profile {
            user_id: 7,
            email: "u@example.com".into(),
            first_name: "Zoë \"Z\"".into(),
            last_name: "\u{1}".into(),
            accounts: vec![account(1, None), account(2, Some(1))],
            permissions: vec![
                Arc::from(vec!["users:read".to_owned(), "keys:write".to_owned()]),
                Arc::from(vec!["keys:write".to_owned()]),
            ],
            rendered: OnceLock::new(),
        })
    }

    fn me(
        profile: &Arc<Profile>,
        narrowed: Option<&[&str]>,
        authentication: &'static str,
    ) -> Vec<u8> {
        Me {
            profile: profile.clone(),
            narrowed_to: narrowed.map(|n| n.iter().map(|p| (*p).to_owned()).collect()),
            account_context: 2,
            authentication,
        }
        .to_json()
    }

    #[test]
    fn me_is_the_apis_json_byte_for_byte() {
        let p = profile();
        let common = concat!(
            r#"{"user":{"type":"user","id":7,"username":"u@example.com","firstName":"Zoë \"Z\"","lastName":"\u0001","links":{"userId":7}},"#,
            r#""accounts":[{"id":1,"name":"a\"1\\","status":"active","parent":null,"type":"account"},"#,
            r#"{"id":2,"name":"a\"2\\","status":"active","parent":1,"type":"account"}],"permissions":"#,
        );
        // A narrowing key first, on a fresh profile: the rendering it leaves
        // is still the unnarrowed one.
        let narrowed = me(&p, Some(&["users:read", "unknown"]), "ARMOR-PSK");
        let tail = r#","features":[],"accountContext":2,"authentication":"ARMOR-PSK"}"#;
        let want = format!(r#"{common}{{"1":["users:read"],"2":[]}}{tail}"#);
        assert_eq!(String::from_utf8(narrowed).unwrap(), want);
        let all = me(&p, None, "FH-AUTH");
        let tail = r#","features":[],"accountContext":2,"authentication":"FH-AUTH"}"#;
        let want =
            format!(r#"{common}{{"1":["users:read","keys:write"],"2":["keys:write"]}}{tail}"#);
        assert_eq!(String::from_utf8(all).unwrap(), want);
    }

    #[test]
    fn a_profiles_rendering_is_made_once_and_reused() {
        let p = profile();
        let _ = p.rendered.set(Rendered {
            common: b"C".to_vec().into(),
            unnarrowed: b"U".to_vec().into(),
        });
        let tail = r#","features":[],"accountContext":2,"authentication":"FH-AUTH"}"#;
        assert_eq!(me(&p, None, "FH-AUTH"), format!("CU{tail}").into_bytes());
        let fresh = profile();
        let first = me(&fresh, None, "FH-AUTH");
        let made = fresh
            .rendered
            .get()
            .map(|r| (r.common.clone(), r.unnarrowed.clone()));
        assert!(made.is_some());
        assert_eq!(me(&fresh, None, "FH-AUTH"), first);
        let again = fresh
            .rendered
            .get()
            .map(|r| (r.common.clone(), r.unnarrowed.clone()));
        assert_eq!(made, again);
    }
}
