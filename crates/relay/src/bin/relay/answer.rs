//! `relay answer`: serve signaling, relay every answered session to
//! `--out`, and, as a node of a tree, onwards to every `--forward`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use relay::metrics::OfferedLink;
use relay::pipe::{Continuity, Pipe, PipeCounters, PipeOptions, Side, StreamSpec};
use relay::reconnect::OfferState;
use relay::{Established, LinkOptions};
use relay_signaling::metrics::serve_metrics;
use relay_signaling::{ServerConfig, SignalingServer, TlsIdentity};

use crate::offer::{LinkOffer, LinkTasks, Notes, log_end};
use crate::{shutdown_signal, status_line};

/// A mistake in the `--forward` targets, in `relay answer`'s words: the
/// planner speaks of `relay offer`'s `--signal`, `--transport` and `--mode`.
pub(crate) fn forward_wording(message: &str) -> String {
    message
        .replace("--signal ", "--forward ")
        .replace("--transport", "--forward-transport")
        .replace("--mode", "--forward-mode")
}

/// The token `relay answer` requires: the one given; none on loopback or
/// with --no-token; otherwise a generated one, so that signaling reachable
/// from a network is never open by default.
pub(crate) fn answer_token(listen: SocketAddr, token: Option<String>, no_token: bool) -> Option<String> {
    if token.is_some() {
        return token;
    }
    if no_token {
        if !listen.ip().is_loopback() {
            tracing::warn!(%listen, "--no-token: signaling is open to anyone who can reach it");
        }
        return None;
    }
    if listen.ip().is_loopback() {
        return None;
    }
    let bytes: [u8; 16] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    tracing::info!(%listen, "listening beyond loopback: generated a bearer token (printed as token=); pass --token to choose one");
    Some(token)
}

/// What `relay answer` serves.
pub(crate) struct AnswerConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) out: Vec<StreamSpec>,
    /// The relays this one passes every session on to (a node).
    pub(crate) forward: Vec<LinkOffer>,
    pub(crate) token: Option<String>,
    pub(crate) tls: Option<TlsIdentity>,
    pub(crate) metrics_listen: Option<SocketAddr>,
    pub(crate) pipe: PipeOptions,
    pub(crate) cors_origins: Vec<String>,
}

pub(crate) async fn answer(config: AnswerConfig, options: LinkOptions) -> Result<ExitCode, String> {
    let AnswerConfig {
        listen,
        out,
        forward,
        token,
        tls,
        metrics_listen,
        pipe: pipe_options,
        cors_origins,
    } = config;
    let continuity = Arc::new(Continuity::default());
    // Every session's pipe counts into these, for /metrics.
    let totals = Arc::new(PipeCounters::default());
    let sessions = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // A node passes every session on through one forwarding pipe, whose
    // links are established below once signaling is up.
    let forwarding = (!forward.is_empty()).then(|| {
        Arc::new(Pipe::forwarding(
            pipe_options.clone(),
            Arc::new(PipeCounters::default()),
        ))
    });
    let sink = {
        let (continuity, totals, out) = (continuity.clone(), totals.clone(), out.clone());
        let forwarding = forwarding.clone();
        Arc::new(move |e: Established| {
            let (continuity, totals, out, pipe_options) = (
                continuity.clone(),
                totals.clone(),
                out.clone(),
                pipe_options.clone(),
            );
            let session = sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let feed = forwarding.as_ref().map(|f| f.feed(session, e.link.clone()));
            let note = forwarding_note(feed.is_some());
            tokio::spawn(async move {
                let counters = Arc::new(PipeCounters::with_total(totals));
                let pipe = match Pipe::bind(Side::Answer, &out, pipe_options, counters.clone()) {
                    Ok(p) => p.with_continuity(continuity, session),
                    Err(error) => {
                        tracing::error!(%error, "cannot open sockets towards --out; closing the session");
                        e.link.close();
                        return;
                    }
                };
                let pipe = match feed {
                    Some(feed) => pipe.with_forward(feed),
                    None => pipe,
                };
                let outs = out.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" ");
                tracing::info!(transport = %e.transport, mode = %e.link.mode(), out = %outs, "link up; relaying to --out{note}");
                let link = e.link.clone();
                let reason = pipe.carry(e.link).await;
                log_end(&*link, &counters, &reason);
            });
        })
    };
    let forward_states: Vec<Arc<OfferState>> = forward.iter().map(|_| Arc::default()).collect();
    let branches = match &forwarding {
        Some(f) if forward.len() > 1 => f.fan_out(forward.len()),
        _ => Vec::new(),
    };
    let mut extra_metrics = relay::metrics::answer_source(continuity, totals);
    if let Some(f) = &forwarding {
        // The forward links' metrics join the answering side's.
        let shown = forward
            .iter()
            .zip(&forward_states)
            .enumerate()
            .map(|(i, (l, state))| {
                let branch = branches.get(i).cloned();
                let counters = branch
                    .as_ref()
                    .map_or_else(|| f.counters().clone(), |b| b.counters().clone());
                OfferedLink::forward(l.name.clone(), state.clone(), counters, branch)
            })
            .collect();
        let (answering, forwarding) = (extra_metrics, relay::metrics::forward_source(shown));
        extra_metrics = Arc::new(move || answering() + &forwarding());
    }
    let mut server_config = ServerConfig::default()
        .token(token.clone())
        .extra_metrics(extra_metrics);
    if let Some(identity) = tls.clone() {
        server_config = server_config.tls(identity);
    }
    for origin in cors_origins {
        server_config = server_config.cors_origin(origin);
    }
    let server = SignalingServer::bind(listen, server_config, relay::answerers(&options, sink))
        .await
        .map_err(|e| e.to_string())?;
    let metrics = match metrics_listen {
        Some(addr) => Some(
            // The signaling server's identity: one fingerprint to pin.
            serve_metrics(addr, token.clone(), server.metrics_source(), tls)
                .await
                .map_err(|e| format!("cannot serve /metrics on --metrics-listen {addr}: {e}"))?,
        ),
        None => None,
    };
    let mut status = format!("listening signal={}", server.url());
    for o in &out {
        status.push_str(&format!(" out={o}"));
    }
    for l in &forward {
        status.push_str(&format!(" forward={}", l.url));
    }
    if let Some(fp) = server.tls_fingerprint() {
        status.push_str(&format!(" signal_fingerprint={}", fp.hex()));
    }
    if let Some(m) = &metrics {
        status.push_str(&format!(" metrics={}", m.url()));
    }
    if let Some(t) = &token {
        status.push_str(&format!(" token={t}"));
    }
    status_line(&status);
    let forward_links = forwarding.map(|f| {
        let note = Notes {
            input: None,
            metrics: String::new(),
        };
        if branches.is_empty() {
            LinkTasks::spawn(forward, vec![f], forward_states, note)
        } else {
            LinkTasks::spawn(forward, branches, forward_states, note)
        }
    });
    shutdown_signal().await;
    tracing::info!("shutting down: closing every session");
    if let Some(links) = forward_links {
        links.stop().await;
    }
    server.shutdown().await;
    if let Some(m) = metrics {
        m.shutdown().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// How a session's "link up" log line mentions forwarding.
fn forwarding_note(forwarding: bool) -> &'static str {
    if forwarding {
        " and passing it on (--forward)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_generated_only_beyond_loopback_unless_refused() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        let net: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(answer_token(lo, None, false), None);
        assert_eq!(answer_token(lo6, None, false), None);
        for addr in [net, any] {
            let generated = answer_token(addr, None, false).expect("a generated token");
            assert_eq!(generated.len(), 32);
            assert_ne!(
                Some(generated),
                answer_token(addr, None, false),
                "tokens are random"
            );
            assert_eq!(answer_token(addr, None, true), None, "--no-token opts out");
        }
        assert_eq!(answer_token(net, Some("t".into()), false).as_deref(), Some("t"));
    }
}
