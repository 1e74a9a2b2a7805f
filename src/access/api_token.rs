//! Strapi API tokens: how a clear token becomes the `access_key` Strapi stores, and how a
//! token is told apart from a JWT.
//!
//! Strapi 4 stores `hex(HMAC-SHA512(key = API_TOKEN_SALT as UTF-8, message = token))` in
//! `strapi_api_tokens.access_key` and looks a presented token up by that hash; the clear token
//! is shown once and never stored.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;

/// The `access_key` Strapi stores for `token`: lowercase hex of HMAC-SHA512 keyed with the
/// salt's UTF-8 bytes.
pub(crate) fn access_key(salt: &str, token: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty key is still a key.
    let Ok(mut mac) = Hmac::<Sha512>::new_from_slice(salt.as_bytes()) else {
        return String::new();
    };
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `token` looks like a JWT: three `.`-separated base64url segments, the first two
/// non-empty (the signature may be empty, as in `alg: none` tokens, which are then refused
/// as JWTs). Strapi's API tokens are 256 hex digits and never contain a dot.
pub(crate) fn is_jwt_shaped(token: &str) -> bool {
    let segments: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = segments.as_slice() else {
        return false;
    };
    let base64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !header.is_empty()
        && !payload.is_empty()
        && base64url(header)
        && base64url(payload)
        && base64url(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lab's read-only token and the `access_key` Strapi 4.26.2 stored for it
    /// (`strapi-v4/rest/49-*`, `data/fixture-full-after-lab.sql`).
    const LAB_SALT: &str = "7hOJwW+vNX8lRL0c0cedWA==";
    const LAB_TOKEN: &str = "30b14af979b15677995281242a0abe535606e30a71f6b8be72ea5d8e8d411a205bf5a23d2d422e9e79c20df74ee490eea2304280c76cd02632ec47c4a92da1f22ed3f463bdf69171f20d8e1ada5784b2e06964d6a68a7a46d873fd055fd3f8db73cf5e76513ca2a2eb1683406dea98a564baaf4900c7ffb13b9435577e4eef63";
    const LAB_ACCESS_KEY: &str = "c72ad5fba3186ce48c08a19855d4c59cf5f9d05ed3130271014a364d4fb546ee6bfcaaa0cc787580b3d4ecd45e041e382659f12994f4b0ef55812b82bab40f8b";

    #[test]
    fn hashes_like_strapi() {
        assert_eq!(access_key(LAB_SALT, LAB_TOKEN), LAB_ACCESS_KEY);
        // python3: hmac.new(b"test-salt", b"my-token", hashlib.sha512).hexdigest()
        assert_eq!(
            access_key("test-salt", "my-token"),
            "6f318381e0fff412ea7fad18702da658647d99d9cd69580d640c0f1d8045527ac473df493946417607cc1da034e5163cd56e619899b0d2f6e04034e289d870f5"
        );
    }

    #[test]
    fn tells_jwts_from_api_tokens() {
        assert!(is_jwt_shaped("eyJh.eyJp.LS4B-_"));
        assert!(is_jwt_shaped("eyJh.eyJp."));
        assert!(!is_jwt_shaped(LAB_TOKEN));
        assert!(!is_jwt_shaped("a.b"));
        assert!(!is_jwt_shaped("a.b.c.d"));
        assert!(!is_jwt_shaped(".b.c"));
        assert!(!is_jwt_shaped("a..c"));
        assert!(!is_jwt_shaped("a.b+/.c"));
        assert!(!is_jwt_shaped("Bearer a.b.c"));
        assert!(!is_jwt_shaped(""));
    }
}
