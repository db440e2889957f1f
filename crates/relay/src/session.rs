//! The signaling server's view of one answered link: connecting, then up,
//! then closed.

use std::future::Future;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use relay_core::{CloseReason, CloseSignal, LinkStats, RelayLink, Transport};
use relay_signaling::Session;

use crate::{Established, LinkSink};

/// A session whose link is being established in the background.
pub(crate) struct LinkSession {
    link: Mutex<Option<Arc<dyn RelayLink>>>,
    close: CloseSignal,
}

impl LinkSession {
    /// Starts waiting for `pending` (the backend's accept) and returns the
    /// session the server tracks. The link goes to `sink` once up; a close
    /// of the session before then abandons the setup.
    pub(crate) fn start<F>(transport: Transport, pending: F, sink: LinkSink) -> Arc<LinkSession>
    where
        F: Future<Output = Result<Arc<dyn RelayLink>, String>> + Send + 'static,
    {
        let session = Arc::new(LinkSession {
            link: Mutex::new(None),
            close: CloseSignal::new(),
        });
        let s = session.clone();
        tokio::spawn(async move {
            let link: Arc<dyn RelayLink> = tokio::select! {
                r = pending => match r {
                    Ok(link) => link,
                    Err(e) => {
                        tracing::warn!(%transport, error = %e, "answered session never came up");
                        s.close.close(CloseReason::Transport(e));
                        return;
                    }
                },
                _ = s.close.wait() => return,
            };
            *s.link.lock().unwrap_or_else(|e| e.into_inner()) = Some(link.clone());
            if s.close.is_closed() {
                // Closed in the instant between setup and storing the link.
                link.close();
                return;
            }
            sink(Established {
                transport,
                link: link.clone(),
            });
            tokio::select! {
                reason = link.closed() => { s.close.close(reason); }
                _ = s.close.wait() => link.close(),
            }
        });
        session
    }

    fn link(&self) -> Option<Arc<dyn RelayLink>> {
        self.link.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait]
impl Session for LinkSession {
    fn stats(&self) -> Option<LinkStats> {
        self.link().map(|l| l.stats())
    }

    fn close(&self) {
        self.close.close(CloseReason::Local);
        if let Some(link) = self.link() {
            link.close();
        }
    }

    async fn closed(&self) -> CloseReason {
        self.close.wait().await
    }
}
