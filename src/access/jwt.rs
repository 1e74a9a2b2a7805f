//! Users-permissions JWTs: `{"id": <up_users.id>, "iat", "exp"}` signed with `JWT_SECRET`.
//!
//! Verified as Strapi 4 verifies them (`jsonwebtoken` for Node with no `algorithms` pin and a
//! secret key): HS256, HS384 or HS512 with the UTF-8 bytes of the secret as the key;
//! `alg: none` and every asymmetric algorithm refused; `exp` enforced when present with no
//! leeway (expired once `now >= exp`), `nbf` likewise (`nbf > now` is not yet valid), `iat`
//! must be a number when present; the payload must carry a numeric `id`. Claim times are
//! checked here against an injected clock, not by the library.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Why a JWT was refused (for debug logs; the client only ever sees "Invalid token.").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JwtError {
    /// Not decodable, wrong algorithm, or wrong signature.
    #[error("signature or format: {0}")]
    Signature(String),
    /// Payload is not a JSON object.
    #[error("payload is not an object")]
    NotAnObject,
    /// `exp`, `nbf` or `iat` is not a number.
    #[error("claim {0} is not a number")]
    BadClaim(&'static str),
    /// `exp` is past.
    #[error("expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("not yet valid")]
    NotYetValid,
    /// No numeric `id`.
    #[error("no numeric id")]
    NoId,
}

/// A users-permissions JWT verifier for one secret.
pub(crate) struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    /// A verifier keyed with the UTF-8 bytes of `secret` (not base64-decoded, as Strapi).
    pub fn new(secret: &str) -> JwtVerifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        // Times are checked in `verify` against the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        JwtVerifier {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Verifies `token` at `now_secs` (Unix seconds) and returns the user id it names.
    #[cfg(test)]
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<i64, JwtError> {
        self.verify_claims(token, now_secs).map(|c| c.id)
    }

    /// [`verify`](Self::verify), returning the `exp` too (a connected socket is checked
    /// again then).
    pub fn verify_claims(&self, token: &str, now_secs: i64) -> Result<Claims, JwtError> {
        let data = jsonwebtoken::decode::<Value>(token, &self.key, &self.validation)
            .map_err(|e| JwtError::Signature(e.to_string()))?;
        let Value::Object(claims) = data.claims else {
            return Err(JwtError::NotAnObject);
        };
        let now = now_secs as f64;
        let number = |name: &'static str| match claims.get(name) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or(JwtError::BadClaim(name)),
        };
        number("iat")?;
        if let Some(nbf) = number("nbf")?
            && nbf > now
        {
            return Err(JwtError::NotYetValid);
        }
        let exp = number("exp")?;
        if exp.is_some_and(|exp| now >= exp) {
            return Err(JwtError::Expired);
        }
        let id = claims.get("id").and_then(json_id).ok_or(JwtError::NoId)?;
        Ok(Claims { id, exp })
    }
}

/// What a verified JWT says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Claims {
    /// `up_users.id`.
    pub id: i64,
    /// `exp` in Unix seconds, when present.
    pub exp: Option<f64>,
}

/// A JSON number that is a whole `i64` (`3`, also `3.0` as JavaScript does not tell them apart).
fn json_id(value: &Value) -> Option<i64> {
    if let Some(id) = value.as_i64() {
        return Some(id);
    }
    let f = value.as_f64()?;
    // Exactly representable whole numbers only; `as` saturates, so check the round trip.
    let id = f as i64;
    (f.fract() == 0.0 && id as f64 == f).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The lab's secret and alice's token (strapi-v4/jwt.md); the others were signed with the
    // same secret by Python's `hmac` module to be independent of the library under test.
    const SECRET: &str = "j9skLpTvMt6nUUQMqNMjAg==";
    const ALICE: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6MSwiaWF0IjoxNzk1NzEwNzAzLCJleHAiOjE3OTgzMDI3MDN9.LS4BEmEJPpm797tEjOVNwHHSfSF0-je_SyrpZn2dU74";
    const HS384: &str = "eyJhbGciOiJIUzM4NCIsInR5cCI6IkpXVCJ9.eyJpZCI6MSwiaWF0IjoxNzk1NzEwNzAzLCJleHAiOjE3OTgzMDI3MDN9.3rfp0lC7vXk_JmwI-ITuY3hycLVtigIUvz9CjZIB5VfY_98NAy-Pzg-MMTZdodTK";
    const HS512: &str = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJpZCI6MSwiaWF0IjoxNzk1NzEwNzAzLCJleHAiOjE3OTgzMDI3MDN9.Y_5I4LFTZNGCcZpqG0LpcZKktawFbm_PvglS-Q448IaGbi8GSiPVESlua8eHuzfspA6oVYsLco42s1oRBA_FhA";
    const NO_EXP: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6MSwiaWF0IjoxNzk1NzEwNzAzfQ.eYVVcApiAnx01iiIfpsSfZJVoCdzVyie5-oLg7FfouU";
    const STRING_ID: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjEiLCJpYXQiOjE3OTU3MTA3MDMsImV4cCI6MTc5ODMwMjcwM30.QXrybSVyZKoL_3lx2Ciy4aSLc2YEOzlIFBITZ_WqGv4";
    const NO_ID: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE3OTU3MTA3MDMsImV4cCI6MTc5ODMwMjcwM30.VOeffqArgouuoQJgtnTzgnkwePyGCfaIxPgLV-i4LY8";
    const ALG_NONE: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpZCI6MSwiaWF0IjoxNzk1NzEwNzAzLCJleHAiOjE3OTgzMDI3MDN9.";
    const RS256_HMAC: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6MSwiaWF0IjoxNzk1NzEwNzAzLCJleHAiOjE3OTgzMDI3MDN9.NXTOXifVN9EEONApXGTDD4-9HswzaoZeISef9qTQ-DY";
    const NBF_FUTURE: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6MSwiaWF0IjoxNzk1NzEwNzAzLCJuYmYiOjE3OTgwMDAwMDAsImV4cCI6MTc5ODMwMjcwM30.bsR722Rtsl7GCBMGvVjSHXmMoIYBtc6KnfoRqnaM7h8";
    const EXP_STRING: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6MSwiaWF0IjoxNzk1NzEwNzAzLCJleHAiOiIxNzk4MzAyNzAzIn0.OOTQqdcANiRIJ9_NkO8TW1G04inHquAmjhcso9bMJNY";

    /// 2026-11-26T16:31:43Z, alice's `iat`.
    const IAT: i64 = 1_795_710_703;
    /// Alice's `exp`.
    const EXP: i64 = 1_798_302_703;

    #[test]
    fn lab_token_verifies_until_exp_and_not_at_it() {
        let v = JwtVerifier::new(SECRET);
        assert_eq!(v.verify(ALICE, IAT), Ok(1));
        assert_eq!(v.verify(ALICE, EXP - 1), Ok(1));
        assert_eq!(v.verify(ALICE, EXP), Err(JwtError::Expired));
    }

    #[test]
    fn hs384_and_hs512_are_accepted() {
        let v = JwtVerifier::new(SECRET);
        assert_eq!(v.verify(HS384, IAT), Ok(1));
        assert_eq!(v.verify(HS512, IAT), Ok(1));
    }

    #[test]
    fn the_base64_looking_secret_is_used_as_text() {
        // Decoding the secret first gives a different key, which must not verify.
        let v = JwtVerifier::new("\u{8f}\u{db}");
        assert!(matches!(v.verify(ALICE, IAT), Err(JwtError::Signature(_))));
    }

    #[test]
    fn refusals() {
        let v = JwtVerifier::new(SECRET);
        assert!(matches!(
            v.verify(ALG_NONE, IAT),
            Err(JwtError::Signature(_))
        ));
        assert!(matches!(
            v.verify(RS256_HMAC, IAT),
            Err(JwtError::Signature(_))
        ));
        assert!(matches!(
            JwtVerifier::new("another secret").verify(ALICE, IAT),
            Err(JwtError::Signature(_))
        ));
        assert!(matches!(
            v.verify("not.a.jwt", IAT),
            Err(JwtError::Signature(_))
        ));
        assert_eq!(v.verify(NO_ID, IAT), Err(JwtError::NoId));
        assert_eq!(v.verify(STRING_ID, IAT), Err(JwtError::NoId));
        assert_eq!(v.verify(NBF_FUTURE, IAT), Err(JwtError::NotYetValid));
        assert_eq!(v.verify(EXP_STRING, IAT), Err(JwtError::BadClaim("exp")));
    }

    #[test]
    fn exp_is_only_enforced_when_present() {
        let v = JwtVerifier::new(SECRET);
        assert_eq!(v.verify(NO_EXP, i64::from(i32::MAX) * 4), Ok(1));
    }

    #[test]
    fn ids_must_be_whole_numbers() {
        assert_eq!(json_id(&serde_json::json!(7)), Some(7));
        assert_eq!(json_id(&serde_json::json!(7.0)), Some(7));
        assert_eq!(json_id(&serde_json::json!(7.5)), None);
        assert_eq!(json_id(&serde_json::json!(1e300)), None);
        assert_eq!(json_id(&serde_json::json!("7")), None);
    }
}
