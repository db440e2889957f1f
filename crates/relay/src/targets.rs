//! The answering relays one `relay offer` relays to, as written on the
//! command line: `--signal URL[,transport=T][,mode=M][,fingerprint=FP][,name=NAME]`,
//! repeatable.
//!
//! One `--signal` is the classic point-to-point link. Several make a
//! fan-out: the same `--in` goes to every answering relay, each over its
//! own link ([`crate::pipe::fanout`]). Each link takes its transport, mode
//! and certificate pin from its own `--signal` when written there, else
//! from `--transport`, `--mode` and `--signal-fingerprint`; so links of one
//! transport need no keys at all, and a mixed fan-out reads link by link:
//!
//! ```text
//! relay offer --in 127.0.0.1:5004 \
//!   --signal http://10.0.0.2:8080,transport=quic \
//!   --signal https://10.0.0.3:8443,transport=dc,mode=unreliable,fingerprint=AB:CD:…,name=eu
//! ```
//!
//! `name=` labels the link in status lines and `/metrics` (`link="eu"`);
//! by default links are numbered from 1 in the order given. Options of the
//! media sockets (`--bind`, `--media-ports`, `--max-delay`, `--reconnect`,
//! the token) are the same for every link.
//!
//! Mistakes are caught before anything is bound or sent, by [`plan`]: a
//! link with no transport, a mode its transport lacks, one pin for several
//! servers, a pin on plain http, the same link twice.

use std::fmt;
use std::str::FromStr;

use relay_core::{Fingerprint, Mode, Transport};

use crate::RelayError;

/// One `--signal`: an answering relay's signaling URL and what this link
/// to it should be, where it differs from the command's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalTarget {
    /// Base URL of the answering relay's signaling.
    pub url: String,
    /// `transport=`.
    pub transport: Option<Transport>,
    /// `mode=`.
    pub mode: Option<Mode>,
    /// `fingerprint=`: the answering relay's HTTPS certificate pin.
    pub fingerprint: Option<Fingerprint>,
    /// `name=`: the link's label.
    pub name: Option<String>,
    /// `token-env=`: the environment variable holding this link's bearer
    /// token (named rather than written out, so it is not on the command
    /// line for every `ps` to read).
    pub token_env: Option<String>,
}

/// Why a `--signal` did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad --signal {input:?}: {reason} (expected URL[,transport=T][,mode=M][,fingerprint=FP][,name=NAME][,token-env=VAR], e.g. http://10.0.0.2:8080,transport=quic)"
)]
pub struct BadSignalTarget {
    input: String,
    reason: String,
}

/// Longest `name=`: it is a metrics label and a status-line field.
const MAX_NAME_LEN: usize = 32;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl FromStr for SignalTarget {
    type Err = BadSignalTarget;

    fn from_str(s: &str) -> Result<SignalTarget, BadSignalTarget> {
        let bad = |reason: String| BadSignalTarget {
            input: s.to_string(),
            reason,
        };
        let mut parts = s.split(',').map(str::trim);
        let url = parts.next().unwrap_or_default();
        if url.is_empty() {
            return Err(bad("no URL".into()));
        }
        let mut target = SignalTarget {
            url: url.to_string(),
            transport: None,
            mode: None,
            fingerprint: None,
            name: None,
            token_env: None,
        };
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not KEY=VALUE")))?;
            let twice = |given: bool| {
                if given {
                    Err(bad(format!("{key}= given twice")))
                } else {
                    Ok(())
                }
            };
            match key {
                "transport" => {
                    twice(target.transport.is_some())?;
                    target.transport = Some(value.parse().map_err(|e| bad(format!("{e}")))?);
                }
                "mode" => {
                    twice(target.mode.is_some())?;
                    target.mode = Some(value.parse().map_err(|e| bad(format!("{e}")))?);
                }
                "fingerprint" => {
                    twice(target.fingerprint.is_some())?;
                    target.fingerprint = Some(value.parse().map_err(|e| bad(format!("{e}")))?);
                }
                "name" => {
                    twice(target.name.is_some())?;
                    if !valid_name(value) {
                        return Err(bad(format!(
                            "name={value:?} must be 1-{MAX_NAME_LEN} letters, digits, '-', '_' or '.'"
                        )));
                    }
                    target.name = Some(value.to_string());
                }
                "token-env" => {
                    twice(target.token_env.is_some())?;
                    if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(bad(format!(
                            "token-env={value:?} must name an environment variable (letters, digits, '_')"
                        )));
                    }
                    target.token_env = Some(value.to_string());
                }
                _ => {
                    return Err(bad(format!(
                        "unknown key {key:?}; known: transport, mode, fingerprint, name, token-env"
                    )));
                }
            }
        }
        Ok(target)
    }
}

impl fmt::Display for SignalTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)?;
        if let Some(t) = self.transport {
            write!(f, ",transport={t}")?;
        }
        if let Some(m) = self.mode {
            write!(f, ",mode={m}")?;
        }
        if let Some(fp) = &self.fingerprint {
            write!(f, ",fingerprint={}", fp.hex())?;
        }
        if let Some(n) = &self.name {
            write!(f, ",name={n}")?;
        }
        if let Some(v) = &self.token_env {
            write!(f, ",token-env={v}")?;
        }
        Ok(())
    }
}

/// What a link takes when its `--signal` does not say:
/// `--transport`, `--mode`, `--signal-fingerprint`.
#[derive(Debug, Clone, Default)]
pub struct TargetDefaults {
    /// `--transport`.
    pub transport: Option<Transport>,
    /// `--mode`.
    pub mode: Option<Mode>,
    /// `--signal-fingerprint`.
    pub fingerprint: Option<Fingerprint>,
}

/// One link `relay offer` will establish, every choice made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedLink {
    /// Its label: `name=`, else its position from 1.
    pub name: String,
    /// The answering relay's signaling URL.
    pub url: String,
    /// Transport.
    pub transport: Transport,
    /// Mode, one of the transport's.
    pub mode: Mode,
    /// The HTTPS pin, if any.
    pub fingerprint: Option<Fingerprint>,
    /// This link's own bearer token (`token-env=`), if it has one; the
    /// command's `--token` otherwise.
    pub token: Option<LinkToken>,
}

/// A bearer token read from the environment; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkToken(pub String);

impl fmt::Debug for LinkToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkToken(…)")
    }
}

/// A combination of `--signal`s and defaults that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum BadTargets {
    /// Neither the link nor `--transport` names a transport.
    #[error(
        "--signal {url} names no transport: pass --transport, or write it on the link ({url},transport=quic)"
    )]
    NoTransport {
        /// The link's URL.
        url: String,
    },
    /// The transport is not compiled in, or lacks the mode.
    #[error("{}{source}{hint}", which_link(url.as_deref()))]
    Unusable {
        /// The link's URL, when there are several.
        url: Option<String>,
        /// What [`crate::check`] said.
        source: Box<RelayError>,
        /// How to fix a `--mode` shared by links of several transports.
        hint: &'static str,
    },
    /// `--signal-fingerprint` with several `--signal`.
    #[error(
        "--signal-fingerprint pins one answering relay, but {links} --signal are given: write each relay's pin on its own --signal (URL,fingerprint=AB:CD:…)"
    )]
    OnePinForSeveral {
        /// How many links.
        links: usize,
    },
    /// Both `--signal-fingerprint` and `fingerprint=`.
    #[error("--signal {url} has fingerprint= and --signal-fingerprint is given too: keep one")]
    PinTwice {
        /// The link's URL.
        url: String,
    },
    /// A pin on a plain http:// URL.
    #[error("--signal {url} is plain http:// but has a certificate pin: use https://, or leave the pin out")]
    PinOverHttp {
        /// The link's URL.
        url: String,
    },
    /// The same URL, transport and mode twice.
    #[error(
        "--signal {url} over {transport} {mode} is given twice: each link needs its own answering relay, transport or mode"
    )]
    Duplicate {
        /// The link's URL.
        url: String,
        /// Its transport.
        transport: Transport,
        /// Its mode.
        mode: Mode,
    },
    /// Two links with one label.
    #[error("two links are named {name:?}: give each --signal its own name=")]
    DuplicateName {
        /// The label.
        name: String,
    },
    /// `token-env=` names a variable that is not set (or not UTF-8).
    #[error("--signal {url} takes its token from ${var}, which is not set")]
    TokenUnset {
        /// The link's URL.
        url: String,
        /// The variable.
        var: String,
    },
}

/// `--signal URL: ` before an error about one link of several.
fn which_link(url: Option<&str>) -> String {
    url.map(|u| format!("--signal {u}: ")).unwrap_or_default()
}

/// Resolves `targets` against `defaults` into the links to establish, in
/// order, or the first mistake.
///
/// ```
/// use relay::targets::{TargetDefaults, plan};
/// use relay_core::{Mode, Transport};
///
/// let targets = ["http://10.0.0.2:8080", "http://10.0.0.3:8080,transport=quic,name=eu"]
///     .map(|t| t.parse().unwrap());
/// let defaults = TargetDefaults { transport: Some(Transport::RtpUdp), ..Default::default() };
/// let links = plan(&targets, &defaults)?;
/// assert_eq!((links[0].name.as_str(), links[0].mode), ("1", Mode::Unreliable));
/// assert_eq!((links[1].name.as_str(), links[1].mode), ("eu", Mode::Datagram));
/// # Ok::<(), relay::targets::BadTargets>(())
/// ```
pub fn plan(targets: &[SignalTarget], defaults: &TargetDefaults) -> Result<Vec<PlannedLink>, BadTargets> {
    plan_with(targets, defaults, |var| std::env::var(var).ok())
}

/// [`plan`], reading `token-env=` variables through `env`.
fn plan_with(
    targets: &[SignalTarget],
    defaults: &TargetDefaults,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<PlannedLink>, BadTargets> {
    if targets.len() > 1 && defaults.fingerprint.is_some() {
        return Err(BadTargets::OnePinForSeveral { links: targets.len() });
    }
    let mut links: Vec<PlannedLink> = Vec::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        let url = t.url.clone();
        let transport = t
            .transport
            .or(defaults.transport)
            .ok_or_else(|| BadTargets::NoTransport { url: url.clone() })?;
        let mode = t.mode.or(defaults.mode).unwrap_or(transport.default_mode());
        crate::check(transport, mode).map_err(|source| BadTargets::Unusable {
            url: (targets.len() > 1).then(|| url.clone()),
            source: Box::new(source),
            hint: if t.mode.is_none() && defaults.mode.is_some() && targets.len() > 1 {
                "; links of several transports take their mode on their own --signal (URL,mode=M)"
            } else {
                ""
            },
        })?;
        if t.fingerprint.is_some() && defaults.fingerprint.is_some() {
            return Err(BadTargets::PinTwice { url });
        }
        let fingerprint = t.fingerprint.or(defaults.fingerprint);
        if fingerprint.is_some() && url.starts_with("http://") {
            return Err(BadTargets::PinOverHttp { url });
        }
        let name = t.name.clone().unwrap_or_else(|| (i + 1).to_string());
        if links.iter().any(|l| l.name == name) {
            return Err(BadTargets::DuplicateName { name });
        }
        let same = |l: &&PlannedLink| {
            l.url.trim_end_matches('/') == url.trim_end_matches('/')
                && l.transport == transport
                && l.mode == mode
        };
        if links.iter().any(|l| same(&l)) {
            return Err(BadTargets::Duplicate { url, transport, mode });
        }
        let token = match &t.token_env {
            Some(var) => match env(var) {
                Some(value) if !value.is_empty() => Some(LinkToken(value)),
                _ => {
                    return Err(BadTargets::TokenUnset {
                        url,
                        var: var.clone(),
                    });
                }
            },
            None => None,
        };
        links.push(PlannedLink {
            name,
            url,
            transport,
            mode,
            fingerprint,
            token,
        });
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(list: &[&str]) -> Vec<SignalTarget> {
        list.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn pin() -> Fingerprint {
        ["AB"; 32].join(":").parse().unwrap()
    }

    #[test]
    fn a_link_takes_its_token_from_the_variable_it_names() {
        let env = |var: &str| (var == "EU_TOKEN").then(|| "s3cret".to_string());
        let t = targets(&[
            "http://a:1,transport=quic,token-env=EU_TOKEN",
            "http://b:1,transport=quic",
        ]);
        let links = plan_with(&t, &TargetDefaults::default(), env).unwrap();
        assert_eq!(links[0].token, Some(LinkToken("s3cret".into())));
        assert_eq!(links[1].token, None, "the command's --token, if any");
        assert!(!format!("{:?}", links[0]).contains("s3cret"), "never printed");
        let unset = targets(&["http://a:1,transport=quic,token-env=US_TOKEN"]);
        let e = plan_with(&unset, &TargetDefaults::default(), env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("$US_TOKEN, which is not set"), "{e}");
    }

    #[test]
    fn a_target_reads_back_as_written() {
        let text = format!(
            "https://10.0.0.2:8443,transport=quic,mode=stream,fingerprint={},name=eu-1,token-env=EU_TOKEN",
            pin().hex()
        );
        let t: SignalTarget = text.parse().unwrap();
        assert_eq!(t.transport, Some(Transport::Quic));
        assert_eq!(t.mode, Some(Mode::Stream));
        assert_eq!(t.fingerprint, Some(pin()));
        assert_eq!(t.to_string(), text);
        let bare: SignalTarget = "http://127.0.0.1:8080".parse().unwrap();
        assert_eq!(bare.to_string(), "http://127.0.0.1:8080");
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        for (text, says) in [
            ("", "no URL"),
            ("http://a:1,quic", "not KEY=VALUE"),
            ("http://a:1,transport=sctp", "unknown transport"),
            ("http://a:1,mode=fast", "fast"),
            ("http://a:1,transport=quic,transport=dc", "transport= given twice"),
            ("http://a:1,name=a b", "letters, digits"),
            ("http://a:1,name=", "letters, digits"),
            ("http://a:1,token=x", "unknown key \"token\""),
            ("http://a:1,token-env=$X", "must name an environment variable"),
            ("http://a:1,fingerprint=zz", "fingerprint"),
        ] {
            let e = text.parse::<SignalTarget>().unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(e.contains("expected URL["), "{e}");
        }
    }

    #[test]
    fn links_take_the_defaults_unless_they_say_otherwise() {
        let defaults = TargetDefaults {
            transport: Some(Transport::Quic),
            mode: Some(Mode::Stream),
            fingerprint: None,
        };
        let links = plan(
            &targets(&["http://a:1", "http://b:1,transport=rtp-udp,mode=srtp,name=b"]),
            &defaults,
        )
        .unwrap();
        assert_eq!(
            links
                .iter()
                .map(|l| (l.name.as_str(), l.transport, l.mode))
                .collect::<Vec<_>>(),
            [
                ("1", Transport::Quic, Mode::Stream),
                ("b", Transport::RtpUdp, Mode::Srtp)
            ]
        );
        // A link's transport without a mode: that transport's default.
        let links = plan(&targets(&["http://a:1,transport=dc"]), &TargetDefaults::default()).unwrap();
        assert_eq!(links[0].mode, Mode::Reliable);
    }

    #[test]
    fn combinations_that_cannot_work_are_refused() {
        let none = TargetDefaults::default();
        let quic = TargetDefaults {
            transport: Some(Transport::Quic),
            ..Default::default()
        };
        let pinned = TargetDefaults {
            fingerprint: Some(pin()),
            ..quic.clone()
        };
        let err = |t: &[&str], d: &TargetDefaults| plan(&targets(t), d).unwrap_err().to_string();
        assert!(err(&["http://a:1"], &none).contains("names no transport"));
        assert!(err(&["https://a:1", "https://b:1"], &pinned).contains("write each relay's pin"));
        let with_pin = format!("https://a:1,fingerprint={}", pin().hex());
        assert!(err(&[&with_pin], &pinned).contains("keep one"));
        let over_http = format!("http://a:1,fingerprint={}", pin().hex());
        assert!(err(&[&over_http], &quic).contains("plain http://"));
        assert!(err(&["http://a:1", "http://a:1/"], &quic).contains("given twice"));
        assert!(err(&["http://a:1,name=x", "http://b:1,name=x"], &quic).contains("named \"x\""));
        let mixed = TargetDefaults {
            mode: Some(Mode::Stream),
            ..quic.clone()
        };
        let e = err(&["http://a:1", "http://b:1,transport=rtp-udp"], &mixed);
        assert!(e.contains("no mode stream") && e.contains("URL,mode=M"), "{e}");
        // The same relay over two transports is two links.
        assert_eq!(
            plan(&targets(&["http://a:1", "http://a:1,transport=dc"]), &quic)
                .unwrap()
                .len(),
            2
        );
    }
}
