//! The Prometheus text exposition format, version 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>): HELP
//! and TYPE lines, samples, and the escaping the format requires.

use std::fmt::{self, Write as _};

use bytes::Bytes;
use http::Response;
use http::header::{CONTENT_TYPE as CONTENT_TYPE_HEADER, HeaderValue};
use http_body_util::Full;
use tracing::warn;

use crate::reply::Body;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// A label value as the format requires: `\`, `"` and line feed escaped.
pub(super) fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text as the format requires: `\` and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Keeps a metric name to `[a-zA-Z0-9_]`.
pub(super) fn metric_name_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (names end in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A sample's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// An unsigned count.
    U(u64),
    /// A signed number (RFC 3550 `lost` can go negative).
    I(i64),
    /// Seconds, ratios.
    F(f64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::U(v) => write!(f, "{v}"),
            Value::I(v) => write!(f, "{v}"),
            // The format takes Go's float syntax: NaN, +Inf, -Inf.
            Value::F(v) if v.is_nan() => f.write_str("NaN"),
            Value::F(v) if v.is_infinite() => f.write_str(if v > 0.0 { "+Inf" } else { "-Inf" }),
            Value::F(v) => write!(f, "{v}"),
        }
    }
}

#[derive(Default)]
pub(super) struct Exposition {
    /// The text written so far.
    pub(super) text: String,
    /// Families written so far: an extra metric named like a built-in one
    /// must not repeat its HELP and TYPE.
    names: Vec<String>,
}

impl Exposition {
    /// One family: HELP, TYPE, then a line per sample; nothing if there is
    /// no sample.
    pub(super) fn family(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        samples: impl IntoIterator<Item = (String, Value)>,
    ) {
        let mut samples = samples.into_iter().peekable();
        if samples.peek().is_none() {
            return;
        }
        if self.names.iter().any(|n| n == name) {
            warn!(
                metric = name,
                "a link metric repeats a built-in metric's name; left out"
            );
            return;
        }
        self.names.push(name.to_owned());
        write_family_text(&mut self.text, name, kind, help, samples);
    }
}

/// HELP, TYPE, then a line per `(labels, value)` sample.
fn write_family_text(
    text: &mut String,
    name: &str,
    kind: Kind,
    help: &str,
    samples: impl IntoIterator<Item = (String, Value)>,
) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    // Writing to a String cannot fail.
    let _ = writeln!(text, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(text, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(text, "{name} {value}");
        } else {
            let _ = writeln!(text, "{name}{{{labels}}} {value}");
        }
    }
}

/// Appends one family with a single unlabelled sample to `out`: for a
/// process's own counters beside [`render`](super::render)'s (see
/// [`ServerConfig::extra_metrics`](crate::ServerConfig::extra_metrics)).
/// The caller keeps its names apart from the built-in ones.
pub fn write_family(out: &mut String, name: &str, kind: Kind, help: &str, value: Value) {
    write_family_text(out, name, kind, help, [(String::new(), value)]);
}

/// Appends one family with a sample per `(labels, value)` to `out`, labels
/// written as `key="value",...` (empty: none), or nothing when there are
/// no samples: for a process's own per-link counters (`relay offer`'s
/// fan-out labels each link). The caller keeps its names apart from the
/// built-in ones and its label values free of characters that need
/// escaping.
pub fn write_labelled_family(
    out: &mut String,
    name: &str,
    kind: Kind,
    help: &str,
    samples: impl IntoIterator<Item = (String, Value)>,
) {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_some() {
        write_family_text(out, name, kind, help, samples);
    }
}

/// `200` with the exposition text.
pub(crate) fn exposition(text: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// The line format of version 0.0.4, checked strictly enough to catch
/// a missing escape, a stray space or a repeated HELP.
#[cfg(test)]
pub(crate) fn check_exposition(text: &str) -> Result<(), String> {
    use std::collections::HashSet;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("no final line feed".into());
    }
    let mut helped = HashSet::new();
    let mut typed = HashSet::new();
    let mut current: Option<String> = None;
    let name_ok = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for (i, line) in text.lines().enumerate() {
        let err = |what: &str| Err(format!("line {}: {what}: {line:?}", i + 1));
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (Some(keyword), Some(name)) = (parts.next(), parts.next()) else {
                return err("short comment");
            };
            if !name_ok(name) {
                return err("bad metric name");
            }
            match keyword {
                "HELP" if !helped.insert(name.to_owned()) => return err("HELP twice"),
                "TYPE" if !typed.insert(name.to_owned()) => return err("TYPE twice"),
                "TYPE" if !matches!(parts.next(), Some("counter" | "gauge")) => return err("bad type"),
                "HELP" | "TYPE" => current = Some(name.to_owned()),
                _ => return err("unknown comment"),
            }
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(parts) => parts,
            None => return err("no value"),
        };
        if value.parse::<f64>().is_err() && !matches!(value, "NaN" | "+Inf" | "-Inf") {
            return err("bad value");
        }
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => match rest.strip_suffix('}') {
                Some(labels) => (name, Some(labels)),
                None => return err("unclosed labels"),
            },
            None => (series, None),
        };
        if !name_ok(name) || current.as_deref() != Some(name) {
            return err("sample outside its family");
        }
        if let Some(labels) = labels {
            let mut rest = labels;
            while !rest.is_empty() {
                let Some((label, after)) = rest.split_once("=\"") else {
                    return err("label without =\"");
                };
                if !name_ok(label) {
                    return err("bad label name");
                }
                // Scan the value: escapes are \\, \" and \n only.
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\' | '"' | 'n')) => {}
                            _ => return err("bad escape"),
                        },
                        Some((j, '"')) => break j,
                        Some((_, '\n')) => return err("raw line feed"),
                        Some(_) => {}
                        None => return err("unterminated label value"),
                    }
                };
                rest = &after[end + 1..];
                if let Some(more) = rest.strip_prefix(',') {
                    rest = more;
                } else if !rest.is_empty() {
                    return err("junk after a label");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_use_the_formats_words_for_specials() {
        assert_eq!(Value::F(f64::NAN).to_string(), "NaN");
        assert_eq!(Value::F(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(Value::F(f64::NEG_INFINITY).to_string(), "-Inf");
        assert_eq!(Value::F(0.5).to_string(), "0.5");
        assert_eq!(metric_name_part("a-b.c_total"), "a_b_c_total");
        assert_eq!(escape_label("a\"b\\\n"), "a\\\"b\\\\\\n");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }
}
