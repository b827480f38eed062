//! The statuses a row can be in, as enums: decoded from their stored text
//! at the store boundary (`#[sqlx(try_from = "String")]`), bound as text.

use std::fmt;

/// A user's status (`users.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserStatus {
    /// Created and invited; no password yet.
    Invited,
    Active,
    Disabled,
    /// Soft-deleted: the row stays for the audit trail.
    Deleted,
}

impl UserStatus {
    /// The stored (and shown) text.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Invited => "invited",
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
            UserStatus::Deleted => "deleted",
        }
    }
}

/// An API key's status (`api_keys.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    Active,
    Deleted,
}

impl KeyStatus {
    /// The stored (and shown) text.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "Active",
            KeyStatus::Deleted => "Deleted",
        }
    }
}

/// A role in an account (`roles.name`): one of the built-in roles, or
/// another named in the `roles` table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    AccountOwner,
    User,
    ReadOnly,
    Other(String),
}

impl Role {
    /// The stored (and shown) name.
    pub fn as_str(&self) -> &str {
        match self {
            Role::AccountOwner => "Account Owner",
            Role::User => "User",
            Role::ReadOnly => "Read Only",
            Role::Other(name) => name,
        }
    }
}

impl From<&str> for Role {
    fn from(name: &str) -> Self {
        match name {
            "Account Owner" => Role::AccountOwner,
            "User" => Role::User,
            "Read Only" => Role::ReadOnly,
            other => Role::Other(other.to_owned()),
        }
    }
}

impl From<String> for Role {
    fn from(name: String) -> Self {
        match Role::from(name.as_str()) {
            Role::Other(_) => Role::Other(name),
            builtin => builtin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Role {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A stored status text that names no known status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStatus(pub String);

impl fmt::Display for UnknownStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown status {:?}", self.0)
    }
}

impl std::error::Error for UnknownStatus {}

macro_rules! text_enum {
    ($t:ty, [$($v:expr),*]) => {
        impl TryFrom<String> for $t {
            type Error = UnknownStatus;
            fn try_from(s: String) -> Result<Self, UnknownStatus> {
                [$($v),*]
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or(UnknownStatus(s))
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

text_enum!(
    UserStatus,
    [
        UserStatus::Invited,
        UserStatus::Active,
        UserStatus::Disabled,
        UserStatus::Deleted
    ]
);
text_enum!(KeyStatus, [KeyStatus::Active, KeyStatus::Deleted]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_text() {
        for s in [
            UserStatus::Invited,
            UserStatus::Active,
            UserStatus::Disabled,
            UserStatus::Deleted,
        ] {
            assert_eq!(UserStatus::try_from(s.to_string()), Ok(s));
        }
        assert_eq!(
            KeyStatus::try_from("Deleted".to_owned()),
            Ok(KeyStatus::Deleted)
        );
        assert!(UserStatus::try_from("Active".to_owned()).is_err());
        for name in ["Account Owner", "User", "Read Only", "Auditor"] {
            assert_eq!(Role::from(name).as_str(), name);
        }
        assert_eq!(Role::from("Read Only".to_owned()), Role::ReadOnly);
    }
}
