//! JWT authentication of Socket.IO connections: a connect middleware that verifies
//! `auth.token` of the CONNECT packet (HS256 with a shared secret, RS256/ES256 with a public
//! key in PEM or a JWKS), checks `exp`, `nbf` and optionally `iss`/`aud`, and keeps the
//! claims for the handlers ([`crate::Socket::claims`]). Refusals are CONNECT_ERROR
//! `{"message":"unauthorized","data":{"reason":...}}`.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::socket::{ConnectError, Namespace, Socket};

/// Why a [`JwtVerifier`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A key did not parse (the reason).
    #[error("invalid key: {0}")]
    Key(String),
    /// A JWKS without any key this verifier can use.
    #[error("the JWKS has no usable key")]
    EmptyKeySet,
}

#[derive(Clone)]
enum Keys {
    One(Arc<DecodingKey>, Algorithm),
    Set(Arc<JwkSet>),
}

/// Verifies tokens; install it on a namespace with [`JwtVerifier::install`].
#[derive(Clone)]
pub struct JwtVerifier {
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
}

impl JwtVerifier {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        JwtVerifier::new(Keys::One(
            Arc::new(DecodingKey::from_secret(secret)),
            Algorithm::HS256,
        ))
    }

    /// A public key: a PEM (RSA for RS256, EC P-256 for ES256) or a JWKS document (JSON).
    pub fn public_key(contents: &[u8]) -> Result<Self, AuthError> {
        if contents.trim_ascii_start().starts_with(b"{") {
            let set: JwkSet =
                serde_json::from_slice(contents).map_err(|e| AuthError::Key(e.to_string()))?;
            if set.keys.is_empty() {
                return Err(AuthError::EmptyKeySet);
            }
            return Ok(JwtVerifier::new(Keys::Set(Arc::new(set))));
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(contents) {
            return Ok(JwtVerifier::new(Keys::One(Arc::new(key), Algorithm::RS256)));
        }
        let key = DecodingKey::from_ec_pem(contents).map_err(|e| AuthError::Key(e.to_string()))?;
        Ok(JwtVerifier::new(Keys::One(Arc::new(key), Algorithm::ES256)))
    }

    fn new(keys: Keys) -> Self {
        JwtVerifier {
            keys,
            issuer: None,
            audience: None,
        }
    }

    /// Requires this `iss`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires this `aud`.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.validate_nbf = true;
        validation.leeway = 5;
        validation.required_spec_claims.clear();
        validation.required_spec_claims.insert("exp".into());
        match &self.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        validation
    }

    /// The claims of a valid token, or why it is refused (a short reason for the client).
    pub fn verify(&self, token: &str) -> Result<Value, &'static str> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
        let decoded = match &self.keys {
            Keys::One(key, algorithm) => {
                if header.alg != *algorithm {
                    return Err("unexpected algorithm");
                }
                jsonwebtoken::decode::<Value>(token, key, &self.validation(*algorithm))
            }
            Keys::Set(set) => {
                let jwk = match &header.kid {
                    Some(kid) => set.find(kid).ok_or("unknown key id")?,
                    None if set.keys.len() == 1 => &set.keys[0],
                    None => return Err("missing key id"),
                };
                let key = DecodingKey::from_jwk(jwk).map_err(|_| "unusable key")?;
                if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
                    return Err("unexpected algorithm");
                }
                jsonwebtoken::decode::<Value>(token, &key, &self.validation(header.alg))
            }
        };
        decoded
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => "token expired",
                ErrorKind::ImmatureSignature => "token not yet valid",
                ErrorKind::InvalidSignature => "invalid signature",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidAlgorithm => "unexpected algorithm",
                ErrorKind::MissingRequiredClaim(_) => "missing claim",
                _ => "invalid token",
            })
    }

    /// Adds the verification as a connect middleware of the namespace.
    pub fn install(&self, namespace: &Namespace) {
        let verifier = self.clone();
        namespace.use_middleware(move |socket: Arc<Socket>| {
            let verifier = verifier.clone();
            async move {
                let token = socket
                    .handshake()
                    .auth
                    .get("token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| refuse("missing token"))?;
                let claims = verifier.verify(token).map_err(refuse)?;
                socket.set_claims(claims);
                Ok(())
            }
        });
    }
}

fn refuse(reason: &str) -> ConnectError {
    ConnectError::with_data("unauthorized", json!({"reason": reason}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn token(claims: Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn hs256_tokens_are_checked() {
        let verifier = JwtVerifier::hs256(b"s3cret").issuer("me").audience("app");
        let good = json!({"sub": "u1", "exp": now() + 60, "iss": "me", "aud": "app"});
        assert_eq!(
            verifier.verify(&token(good.clone(), b"s3cret")).unwrap()["sub"],
            "u1"
        );
        assert_eq!(
            verifier.verify(&token(good.clone(), b"other")),
            Err("invalid signature")
        );
        let expired = json!({"exp": now() - 600, "iss": "me", "aud": "app"});
        assert_eq!(
            verifier.verify(&token(expired, b"s3cret")),
            Err("token expired")
        );
        let early = json!({"exp": now() + 600, "nbf": now() + 300, "iss": "me", "aud": "app"});
        assert_eq!(
            verifier.verify(&token(early, b"s3cret")),
            Err("token not yet valid")
        );
        let wrong_iss = json!({"exp": now() + 60, "iss": "you", "aud": "app"});
        assert_eq!(
            verifier.verify(&token(wrong_iss, b"s3cret")),
            Err("wrong issuer")
        );
        let wrong_aud = json!({"exp": now() + 60, "iss": "me", "aud": "other"});
        assert_eq!(
            verifier.verify(&token(wrong_aud, b"s3cret")),
            Err("wrong audience")
        );
        let no_exp = json!({"iss": "me", "aud": "app"});
        assert_eq!(
            verifier.verify(&token(no_exp, b"s3cret")),
            Err("missing claim")
        );
        assert_eq!(verifier.verify("not.a.token"), Err("malformed token"));
        assert_eq!(verifier.verify(""), Err("malformed token"));
    }

    #[test]
    fn a_token_signed_with_another_algorithm_is_refused() {
        let verifier = JwtVerifier::hs256(b"k");
        let claims = json!({"exp": now() + 60});
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &claims,
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert_eq!(verifier.verify(&hs384), Err("unexpected algorithm"));
    }

    #[test]
    fn bad_public_keys_are_errors() {
        assert!(JwtVerifier::public_key(b"not a key").is_err());
        assert!(matches!(
            JwtVerifier::public_key(br#"{"keys":[]}"#),
            Err(AuthError::EmptyKeySet)
        ));
        assert!(JwtVerifier::public_key(b"{broken").is_err());
    }
}
