//! Session ids: 20 url-safe base64 characters from 15 random bytes, as Engine.IO makes them.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A session (or socket) id. Stored inline so maps keyed by it hash 20 bytes, no heap.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid([u8; Sid::LEN]);

impl Sid {
    /// Characters in an id: 15 random bytes in url-safe base64, no padding.
    pub const LEN: usize = 20;

    /// A fresh random id.
    pub fn random() -> Sid {
        let raw: [u8; 15] = rand::random();
        let mut out = [0u8; Self::LEN];
        // 15 bytes always encode to exactly 20 characters without padding.
        let _ = URL_SAFE_NO_PAD.encode_slice(raw, &mut out);
        Sid(out)
    }

    /// Parses an id received from a peer; anything but 20 url-safe base64 characters is rejected.
    pub fn parse(text: &str) -> Option<Sid> {
        let bytes: [u8; Self::LEN] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            .then_some(Sid(bytes))
    }

    /// The id as text (ASCII).
    pub fn as_str(&self) -> &str {
        // Only ever built from url-safe base64 characters (ASCII).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_twenty_url_safe_chars_and_differ() {
        let a = Sid::random();
        let b = Sid::random();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 20);
        assert_eq!(Sid::parse(a.as_str()), Some(a));
    }

    #[test]
    fn parse_rejects_bad_ids() {
        assert_eq!(Sid::parse("short"), None);
        assert_eq!(Sid::parse("aaaaaaaaaaaaaaaaaaa/"), None);
        assert_eq!(Sid::parse("aaaaaaaaaaaaaaaaaaaaa"), None);
        assert!(Sid::parse("aaaaaaaaaaaaaaaaaa-_").is_some());
    }
}
