//! Users-permissions JWTs signed with `JWT_SECRET`: Strapi 4's (and Strapi 5's legacy)
//! `{"id": <up_users.id>, "iat", "exp"}`, and Strapi 5's session access tokens
//! `{"userId": "<up_users.id>", "sessionId", "type": "access", "iat", "exp"}`.
//!
//! Strapi 5's `jwtManagement` decides which: `legacy-support` (the default) accepts both,
//! `refresh` only the session shape. A token whose `type` is present and not `access` (a
//! refresh token, signed with the same secret) is refused in both modes, and so is a `userId`
//! token without `type: "access"`. Like Strapi, the access token is verified statelessly: its
//! session row in `strapi_sessions` is not consulted.
//!
//! Verified as Strapi 4 verifies them (`jsonwebtoken` for Node with no `algorithms` pin and a
//! secret key): HS256, HS384 or HS512 with the UTF-8 bytes of the secret as the key;
//! `alg: none` and every asymmetric algorithm refused; `exp` enforced when present with no
//! leeway (expired once `now >= exp`), `nbf` likewise (`nbf > now` is not yet valid), `iat`
//! must be a number when present; the payload must carry a numeric `id`. Claim times are
//! checked here against an injected clock, not by the library.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::JwtManagement;

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
    /// No numeric `id` (nor a `userId` of digits).
    #[error("no numeric id")]
    NoId,
    /// `type` is present and not `access` (a refresh token), or a `userId` token lacks it.
    #[error("not an access token")]
    NotAccess,
    /// The `{"id": n}` shape while Strapi's `jwtManagement` is `refresh`.
    #[error("legacy token shape refused in refresh mode")]
    LegacyShape,
}

/// A users-permissions JWT verifier for one secret.
pub(crate) struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    mode: JwtManagement,
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
            mode: JwtManagement::LegacySupport,
        }
    }

    /// The same verifier accepting the token shapes of `mode`.
    pub fn with_mode(mut self, mode: JwtManagement) -> JwtVerifier {
        self.mode = mode;
        self
    }

    /// Verifies `token` at `now_secs` (Unix seconds) and returns the user id it names.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<i64, JwtError> {
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
        if let Some(exp) = number("exp")?
            && now >= exp
        {
            return Err(JwtError::Expired);
        }
        let access = match claims.get("type") {
            None => false,
            Some(Value::String(t)) if t == "access" => true,
            Some(_) => return Err(JwtError::NotAccess),
        };
        if let Some(user) = claims.get("userId") {
            if !access {
                return Err(JwtError::NotAccess);
            }
            // Strapi loads the user by `Number(userId)`; it issues the id as a string.
            return match user {
                Value::String(text) => text
                    .parse::<i64>()
                    .ok()
                    .filter(|_| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())),
                other => json_id(other),
            }
            .ok_or(JwtError::NoId);
        }
        if self.mode == JwtManagement::Refresh {
            return Err(JwtError::LegacyShape);
        }
        claims.get("id").and_then(json_id).ok_or(JwtError::NoId)
    }
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

    // Strapi 5.54.0 in refresh mode (strapi-v5/rest/02-login-alice.txt): alice's access token
    // and refresh cookie; the others signed with the same secret by Python's `hmac`.
    const SECRET5: &str = "RFskDQEdRWJ2hECtPuICNQ==";
    const ACCESS5: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VySWQiOiIxIiwic2Vzc2lvbklkIjoiMjVmMTE4NGU2N2M1YzdkMDdjMTdhYWQ0NzQ3ZWYwZjAiLCJ0eXBlIjoiYWNjZXNzIiwiaWF0IjoxNzk1NzExMTQ0LCJleHAiOjE3OTU3MTE3NDR9.YAEvEcXKuMapius3fz0TFWhpHy3P0y-Bocu-o8oLfLU";
    const REFRESH5: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VySWQiOiIxIiwic2Vzc2lvbklkIjoiMjVmMTE4NGU2N2M1YzdkMDdjMTdhYWQ0NzQ3ZWYwZjAiLCJ0eXBlIjoicmVmcmVzaCIsImV4cCI6MTc5NjkyMDc0NH0.GM5fEBBcHmThsS192UTtvN-xEIbh4I-A-Kwy1hbDvF8";
    const LEGACY5: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6MSwiaWF0IjoxNzk1NzExMTQ0LCJleHAiOjE3OTgzMDMxNDR9.taVr9njB4WI3ZN8NkzJcw9Mc_JwgPf-9NQB5dVMrtak";
    const NO_TYPE5: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VySWQiOiIxIiwic2Vzc2lvbklkIjoieCIsImlhdCI6MTc5NTcxMTE0NCwiZXhwIjoxNzk1NzExNzQ0fQ.PXvU7QKP0M-8TkV3xe0ywxpFl4u5LdHZ2Ct7u2qtlzo";
    const ODD_TYPE5: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6MSwidHlwZSI6IndlaXJkIiwiaWF0IjoxNzk1NzExMTQ0LCJleHAiOjE3OTU3MTE3NDR9._0dmCdW9lud3OnNrVEOxhXDhBfha_w1gwkEgQtQH90E";
    const BAD_USER_ID5: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VySWQiOiIxeCIsInNlc3Npb25JZCI6IngiLCJ0eXBlIjoiYWNjZXNzIiwiaWF0IjoxNzk1NzExMTQ0LCJleHAiOjE3OTU3MTE3NDR9.sQ2pHKULhpwhBJD13XQrAErpa5kmyOJWrH9mvKBUvfg";
    /// The access token's `iat`; it expires 600 s later.
    const IAT5: i64 = 1_795_711_144;

    #[test]
    fn strapi5_access_tokens_verify_in_both_modes_until_their_ten_minutes_end() {
        for mode in [JwtManagement::LegacySupport, JwtManagement::Refresh] {
            let v = JwtVerifier::new(SECRET5).with_mode(mode);
            assert_eq!(v.verify(ACCESS5, IAT5), Ok(1), "{mode:?}");
            assert_eq!(v.verify(ACCESS5, IAT5 + 599), Ok(1), "{mode:?}");
            assert_eq!(v.verify(ACCESS5, IAT5 + 600), Err(JwtError::Expired));
        }
    }

    #[test]
    fn refresh_tokens_and_other_types_are_refused_in_both_modes() {
        for mode in [JwtManagement::LegacySupport, JwtManagement::Refresh] {
            let v = JwtVerifier::new(SECRET5).with_mode(mode);
            assert_eq!(v.verify(REFRESH5, IAT5), Err(JwtError::NotAccess));
            assert_eq!(v.verify(ODD_TYPE5, IAT5), Err(JwtError::NotAccess));
            assert_eq!(v.verify(NO_TYPE5, IAT5), Err(JwtError::NotAccess));
            assert_eq!(v.verify(BAD_USER_ID5, IAT5), Err(JwtError::NoId));
        }
    }

    #[test]
    fn the_legacy_id_shape_is_accepted_only_in_legacy_support() {
        let legacy = JwtVerifier::new(SECRET5);
        assert_eq!(legacy.verify(LEGACY5, IAT5), Ok(1));
        let refresh = JwtVerifier::new(SECRET5).with_mode(JwtManagement::Refresh);
        assert_eq!(refresh.verify(LEGACY5, IAT5), Err(JwtError::LegacyShape));
        // Strapi 4 tokens are the same shape.
        assert_eq!(
            JwtVerifier::new(SECRET)
                .with_mode(JwtManagement::Refresh)
                .verify(ALICE, IAT),
            Err(JwtError::LegacyShape)
        );
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
