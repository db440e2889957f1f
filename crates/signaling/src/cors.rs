//! Cross-origin requests from browser pages: the CORS protocol of the
//! Fetch standard (<https://fetch.spec.whatwg.org/#http-cors-protocol>).
//!
//! A browser marks every cross-origin `fetch` with an `Origin` header. A
//! request it may not send as is (a JSON body, an `Authorization` header,
//! `DELETE`) is first asked about with a preflight `OPTIONS` carrying
//! `Access-Control-Request-Method`; the answer's `Access-Control-Allow-*`
//! headers say whether the page may go on. A "simple" request (a
//! `text/plain` POST, say) is sent without asking, and only its response
//! is hidden from the page: so the server itself must refuse an origin it
//! does not allow before doing anything, or a page from anywhere could
//! create sessions it cannot even read.
//!
//! Requests without `Origin` (curl, [`SignalingClient`](crate::SignalingClient),
//! other servers) are not cross-origin requests and are not affected.

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, HeaderMap,
    HeaderValue, ORIGIN, VARY,
};
use http::{Method, Response, StatusCode};

use crate::reply::{self, Body};
use crate::route::Route;

/// How long a browser may reuse a preflight answer, in seconds: a page's
/// whole exchange (offer, stats polls, delete) takes one preflight per
/// path, and a changed configuration is seen within ten minutes. (Chromium
/// caps it at two hours, Firefox at a day.)
const MAX_AGE_SECONDS: &str = "600";

/// Request headers a page may send: the bearer token and the JSON body's
/// type (`Content-Type: application/json` is not CORS-safelisted).
const ALLOW_HEADERS: &str = "Authorization, Content-Type";

/// The origins a server lets browser pages call it from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cors {
    /// `*` was configured: any origin.
    any: bool,
    /// Exact origins (`scheme://host[:port]`), compared ignoring ASCII case.
    origins: Vec<String>,
}

/// What a request's `Origin` header means for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No `Origin`: not a cross-origin request; served as always.
    NoOrigin,
    /// An allowed origin, to be echoed in `Access-Control-Allow-Origin`.
    Allowed(HeaderValue),
    /// An origin that is not allowed (or an unreadable or repeated
    /// `Origin`), as the request gave it.
    Refused(String),
}

impl Cors {
    /// From the configured origins, each an origin or `*` (see
    /// [`check_origin`]).
    pub(crate) fn new(configured: &[String]) -> Cors {
        Cors {
            any: configured.iter().any(|o| o == "*"),
            origins: configured.iter().filter(|o| *o != "*").cloned().collect(),
        }
    }

    /// Judges the request's `Origin` header.
    pub(crate) fn verdict(&self, headers: &HeaderMap) -> Verdict {
        let mut values = headers.get_all(ORIGIN).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return match headers.get_all(ORIGIN).iter().count() {
                0 => Verdict::NoOrigin,
                n => Verdict::Refused(format!("{n} Origin headers")),
            };
        };
        let Ok(origin) = value.to_str() else {
            return Verdict::Refused(String::from_utf8_lossy(value.as_bytes()).into_owned());
        };
        // "null" (a sandboxed or file:// page) is never an allowed origin,
        // even with `*`: any page can make itself "null".
        let allowed =
            origin != "null" && (self.any || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)));
        if allowed {
            Verdict::Allowed(value.clone())
        } else {
            Verdict::Refused(origin.to_owned())
        }
    }
}

/// Whether `configured` is `*` or an origin as a browser sends it:
/// `scheme://host[:port]`, without path, query or trailing slash.
pub(crate) fn check_origin(configured: &str) -> bool {
    if configured == "*" {
        return true;
    }
    let Ok(uri) = configured.parse::<http::Uri>() else {
        return false;
    };
    match (uri.scheme_str(), uri.authority()) {
        // No user info, no wildcard: an Origin header never has them.
        (Some(scheme), Some(authority)) => {
            let authority = authority.as_str();
            !authority.contains(['@', '*']) && configured == format!("{scheme}://{authority}")
        }
        _ => false,
    }
}

/// Whether the request is a CORS preflight (`OPTIONS` with
/// `Access-Control-Request-Method`; the caller has seen an `Origin`).
pub(crate) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// `204` to an allowed origin's preflight: the route's methods and the
/// headers a page sends. No token needed: a preflight carries none.
pub(crate) fn preflight(route: Route<'_>) -> Response<Body> {
    let mut response = reply::no_content();
    let methods = route
        .allowed()
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let headers = response.headers_mut();
    if let Ok(methods) = HeaderValue::from_str(&methods) {
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, methods);
    }
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE_SECONDS));
    response
}

/// Lets the page from `origin` read `response`, and its `Location`.
pub(crate) fn allow(response: &mut Response<Body>, origin: HeaderValue) {
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    // The answer depends on Origin: a cache must not hand one page's to
    // another.
    headers.append(VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location"),
    );
}

/// `403` for a request from an origin that is not allowed, preflight or
/// not, without CORS headers (so the page learns nothing but the failure).
pub(crate) fn refuse(origin: &str) -> Response<Body> {
    let message = format!(
        "cross-origin requests from {origin:?} are not allowed; the server's operator can allow \
         the page's origin (ServerConfig::cors_origin)"
    );
    tracing::debug!(%origin, "signaling request refused: origin not allowed");
    reply::error(StatusCode::FORBIDDEN, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origins: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for o in origins {
            h.append(ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn configured_origins_are_origins_or_star() {
        for ok in [
            "*",
            "https://app.example",
            "http://127.0.0.1:8080",
            "https://[::1]:443",
            "chrome-extension://abcdef",
        ] {
            assert!(check_origin(ok), "{ok}");
        }
        for bad in [
            "",
            "null",
            "app.example",
            "https://app.example/",
            "https://app.example/page",
            "https://app.example?x=1",
            "https://user@app.example",
            "https://*.example",
            "**",
        ] {
            assert!(!check_origin(bad), "{bad}");
        }
    }

    #[test]
    fn only_configured_origins_are_allowed() {
        let cors = Cors::new(&["https://app.example".into()]);
        assert_eq!(cors.verdict(&headers(&[])), Verdict::NoOrigin);
        assert_eq!(
            cors.verdict(&headers(&["https://APP.example"])),
            Verdict::Allowed(HeaderValue::from_static("https://APP.example"))
        );
        for refused in [
            "https://evil.example",
            "http://app.example",
            "https://app.example:444",
            "null",
        ] {
            assert_eq!(
                cors.verdict(&headers(&[refused])),
                Verdict::Refused(refused.into()),
                "{refused}"
            );
        }
        assert!(matches!(
            cors.verdict(&headers(&["https://app.example", "https://evil.example"])),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            Cors::default().verdict(&headers(&["https://app.example"])),
            Verdict::Refused(_)
        ));
    }

    #[test]
    fn star_allows_any_origin_but_null() {
        let cors = Cors::new(&["*".into()]);
        assert!(matches!(
            cors.verdict(&headers(&["https://anywhere.example"])),
            Verdict::Allowed(_)
        ));
        assert!(matches!(cors.verdict(&headers(&["null"])), Verdict::Refused(_)));
    }
}
