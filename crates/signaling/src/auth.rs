//! Bearer-token check (RFC 6750 section 2.1), in constant time.

use http::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use subtle::ConstantTimeEq;

use crate::reply::{self, Body};

/// Whether an `Authorization` header value carries `token`.
///
/// The comparison takes the same time wherever the first differing byte is,
/// so the token cannot be guessed byte by byte from response times. (Its
/// length can: `subtle` compares equal-length slices only, which is the
/// usual trade-off for bearer tokens.)
pub(crate) fn bearer_matches(header: Option<&[u8]>, token: &str) -> bool {
    let Some(header) = header else {
        return false;
    };
    // RFC 7235 section 2.1: the scheme is case-insensitive.
    const SCHEME: &[u8] = b"bearer ";
    if header.len() < SCHEME.len() || !header[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return false;
    }
    let presented = header[SCHEME.len()..].trim_ascii();
    presented.ct_eq(token.as_bytes()).into()
}

/// `None` if the request may pass, else the `401`.
pub(crate) fn authorize<B>(token: Option<&str>, req: &Request<B>) -> Option<Response<Body>> {
    let token = token?;
    if bearer_matches(req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes), token) {
        return None;
    }
    let mut response = reply::error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token; send Authorization: Bearer <token>",
    );
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_token() {
        assert!(bearer_matches(Some(b"Bearer s3cret"), "s3cret"));
        assert!(bearer_matches(Some(b"bearer  s3cret "), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
        assert!(!bearer_matches(Some(b""), "s3cret"));
        assert!(!bearer_matches(Some(b"Bearer"), "s3cret"));
        assert!(!bearer_matches(Some(b"Bearer "), "s3cret"));
        assert!(!bearer_matches(Some(b"Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some(b"Bearer s3cretX"), "s3cret"));
        assert!(!bearer_matches(Some(b"Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(Some(b"s3cret"), "s3cret"));
        assert!(!bearer_matches(Some(b"Bearer \xffs3cret"), "s3cret"));
    }
}
