//! The paths the server knows, and which methods each accepts.

use http::Method;

/// A known path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// `/healthz`
    Health,
    /// `/metrics` (Prometheus text format)
    Metrics,
    /// `/v1/sessions`
    Sessions,
    /// `/v1/sessions/{id}`
    Session(&'a str),
    /// `/v1/sessions/{id}/stats`
    SessionStats(&'a str),
}

impl<'a> Route<'a> {
    /// The route for a request path (without query), or `None` (404).
    pub(crate) fn parse(path: &'a str) -> Option<Route<'a>> {
        if path == "/healthz" {
            return Some(Route::Health);
        }
        if path == "/metrics" {
            return Some(Route::Metrics);
        }
        let rest = path.strip_prefix("/v1/sessions")?;
        if rest.is_empty() {
            return Some(Route::Sessions);
        }
        let rest = rest.strip_prefix('/')?;
        match rest.split_once('/') {
            None if !rest.is_empty() => Some(Route::Session(rest)),
            Some((id, "stats")) if !id.is_empty() => Some(Route::SessionStats(id)),
            _ => None,
        }
    }

    /// The methods this path accepts, for `405` and its `Allow` header.
    pub(crate) fn allowed(self) -> &'static [Method] {
        match self {
            Route::Health | Route::Metrics | Route::SessionStats(_) => &[Method::GET],
            Route::Sessions => &[Method::GET, Method::POST],
            Route::Session(_) => &[Method::GET, Method::DELETE],
        }
    }

    /// Whether a request needs the bearer token (everything but the health check,
    /// which load balancers probe without credentials).
    pub(crate) fn needs_token(self) -> bool {
        self != Route::Health
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths() {
        assert_eq!(Route::parse("/healthz"), Some(Route::Health));
        assert_eq!(Route::parse("/metrics"), Some(Route::Metrics));
        assert_eq!(Route::parse("/v1/sessions"), Some(Route::Sessions));
        assert_eq!(Route::parse("/v1/sessions/ab12"), Some(Route::Session("ab12")));
        assert_eq!(
            Route::parse("/v1/sessions/ab12/stats"),
            Some(Route::SessionStats("ab12"))
        );
    }

    #[test]
    fn unknown_paths() {
        for p in [
            "/",
            "",
            "/healthz/",
            "/v1",
            "/v1/sessions/",
            "/v1/sessionsx",
            "/v1/sessions//stats",
            "/v1/sessions/ab/stats/x",
            "/v1/sessions/ab/other",
            "/v2/sessions",
        ] {
            assert_eq!(Route::parse(p), None, "{p}");
        }
    }

    #[test]
    fn only_health_is_open() {
        assert!(!Route::Health.needs_token());
        assert!(Route::Sessions.needs_token());
        assert!(Route::Metrics.needs_token());
        assert!(Route::SessionStats("a").needs_token());
    }
}
