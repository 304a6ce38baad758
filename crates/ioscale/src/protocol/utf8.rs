//! Shared, immutable UTF-8 text: `Bytes` that are known to be valid UTF-8.
//!
//! The codecs' own type, so that no transport crate's type appears in a packet. The
//! WebSocket layer converts tungstenite's text to it (and back to `Bytes`) without a copy.

use std::fmt;
use std::ops::Deref;
use std::str::Utf8Error;

use bytes::Bytes;

/// `Bytes` holding valid UTF-8. Cloning shares the buffer.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Text of a `'static` string, without a copy.
    pub const fn from_static(text: &'static str) -> Utf8Bytes {
        Utf8Bytes(Bytes::from_static(text.as_bytes()))
    }

    /// Wraps bytes already known to be UTF-8 (for example a transport's checked text
    /// frame), without checking them again.
    ///
    /// # Safety
    /// `bytes` must be valid UTF-8: [`Utf8Bytes::as_str`] relies on it.
    #[allow(unsafe_code)]
    pub unsafe fn from_bytes_unchecked(bytes: Bytes) -> Utf8Bytes {
        Utf8Bytes(bytes)
    }

    /// The text, without a check (the bytes are UTF-8 by construction).
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks, or is given the guarantee, that the bytes are
        // UTF-8, and `slice_from` cuts only at a char boundary.
        #[allow(unsafe_code)]
        unsafe {
            std::str::from_utf8_unchecked(&self.0)
        }
    }

    /// The UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text from byte `start` on, sharing the buffer; `None` if `start` is not a char
    /// boundary (or past the end).
    pub fn slice_from(&self, start: usize) -> Option<Utf8Bytes> {
        self.as_str()
            .is_char_boundary(start)
            .then(|| Utf8Bytes(self.0.slice(start..)))
    }

    /// The underlying bytes (no copy).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = Utf8Error;

    /// Checks the bytes once; no copy.
    fn try_from(bytes: Bytes) -> Result<Utf8Bytes, Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }
}

impl From<String> for Utf8Bytes {
    /// Takes the string's buffer (no copy).
    fn from(text: String) -> Utf8Bytes {
        Utf8Bytes(Bytes::from(text))
    }
}

impl From<&str> for Utf8Bytes {
    /// Copies the text (use [`Utf8Bytes::from_static`] for literals).
    fn from(text: &str) -> Utf8Bytes {
        Utf8Bytes(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(text: Utf8Bytes) -> Bytes {
        text.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_utf8_once_and_shares_the_buffer() {
        let bytes = Bytes::from_static("4héllo".as_bytes());
        let text = Utf8Bytes::try_from(bytes.clone()).unwrap();
        assert_eq!(text, "4héllo");
        assert_eq!(Bytes::from(text.clone()).as_ptr(), bytes.as_ptr());
        assert!(Utf8Bytes::try_from(Bytes::from_static(b"4\xff")).is_err());
    }

    #[test]
    fn slices_only_at_char_boundaries() {
        let text = Utf8Bytes::from_static("éa");
        assert_eq!(text.slice_from(1), None);
        assert_eq!(text.slice_from(2), Some(Utf8Bytes::from_static("a")));
        assert_eq!(text.slice_from(3), Some(Utf8Bytes::from_static("")));
        assert_eq!(text.slice_from(4), None);
        assert_eq!(
            text.slice_from(2).unwrap().as_bytes().as_ptr(),
            ptr_at(&text, 2)
        );
    }

    fn ptr_at(text: &Utf8Bytes, offset: usize) -> *const u8 {
        text.as_bytes()[offset..].as_ptr()
    }
}
