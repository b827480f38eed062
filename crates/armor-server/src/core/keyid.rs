//! [`KeyId`]: an API key's id, held inline when it is short.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// Bytes an id may have and still be held inline: the ids armor makes are
/// UUIDs, 36 characters.
const INLINE: usize = 38;

/// An API key's id. Held inline when short (every id armor makes is), so
/// that copying one, as each accepted request does into its principal,
/// touches no memory but its own; a longer id is shared. Compares, hashes
/// and prints as the text it holds.
#[derive(Clone)]
pub struct KeyId(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<str>),
}

impl KeyId {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Always whole UTF-8: the bytes of a `&str` (see `From`).
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Shared(s) => s,
        }
    }
}

impl From<&str> for KeyId {
    fn from(id: &str) -> Self {
        match u8::try_from(id.len()) {
            Ok(len) if id.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..id.len()].copy_from_slice(id.as_bytes());
                KeyId(Repr::Inline { len, bytes })
            }
            _ => KeyId(Repr::Shared(id.into())),
        }
    }
}

impl Deref for KeyId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for KeyId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for KeyId {}

impl Hash for KeyId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn short_and_long_ids_read_back_and_compare_as_their_text() {
        let uuid = "0b5a7e4c-2f1d-4c3b-9a8e-7d6c5b4a3f2e";
        let long = "k".repeat(INLINE + 1);
        for id in ["", "é", uuid, &"x".repeat(INLINE), &long] {
            let k = KeyId::from(id);
            assert_eq!(k.as_str(), id);
            assert_eq!(&*k.clone(), id);
            assert_eq!(k.to_string(), id);
            assert_eq!(format!("{k:?}"), format!("{id:?}"));
            assert_eq!(k, KeyId::from(id));
        }
        assert!(matches!(KeyId::from(uuid).0, Repr::Inline { .. }));
        assert!(matches!(KeyId::from(long.as_str()).0, Repr::Shared(_)));
        assert_ne!(KeyId::from("a"), KeyId::from("b"));
        // Found by its text in a set, held inline or not.
        let set: HashSet<KeyId> = [uuid, long.as_str()].into_iter().map(KeyId::from).collect();
        assert!(set.contains(uuid) && set.contains(long.as_str()) && !set.contains("a"));
    }
}
