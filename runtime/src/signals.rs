//! Process signals: SIGHUP reloads, SIGUSR1 reopens the audit log, SIGTERM/SIGINT shut down.
//!
//! Every handler is registered before the listeners open. Registered later (in a spawned
//! task), a SIGHUP sent as soon as gw answers could meet the default action, which is to exit.

/// The registered signal streams; each is taken once by the task that serves it.
pub struct Signals {
    pub hangup: SignalStream,
    pub user1: SignalStream,
    terminate: SignalStream,
    interrupt: SignalStream,
}

impl Signals {
    /// Register every handler gw serves. One that cannot be registered is logged; its signal
    /// then keeps the default action.
    pub fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::SignalKind;
            Signals {
                hangup: SignalStream::register(SignalKind::hangup(), "SIGHUP (reload with POST /admin/reload)"),
                user1: SignalStream::register(SignalKind::user_defined1(), "SIGUSR1"),
                terminate: SignalStream::register(SignalKind::terminate(), "SIGTERM"),
                interrupt: SignalStream::register(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Signals {
            hangup: SignalStream::none(),
            user1: SignalStream::none(),
            terminate: SignalStream::none(),
            interrupt: SignalStream::none(),
        }
    }

    /// Resolves at the first SIGTERM or SIGINT.
    pub async fn shutdown(&mut self) {
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv_or_pending() => {}
            _ = self.interrupt.recv_or_pending() => {}
        }
    }
}

/// One registered signal (None where it could not be registered).
pub struct SignalStream(#[cfg(unix)] Option<tokio::signal::unix::Signal>, #[cfg(not(unix))] Option<()>);

impl SignalStream {
    /// A stream that never delivers (what is left behind once a stream is taken).
    pub fn none() -> SignalStream {
        SignalStream(None)
    }

    #[cfg(unix)]
    fn register(kind: tokio::signal::unix::SignalKind, name: &str) -> SignalStream {
        match tokio::signal::unix::signal(kind) {
            Ok(s) => SignalStream(Some(s)),
            Err(e) => {
                tracing::warn!("cannot listen for {name}: {e}");
                SignalStream(None)
            }
        }
    }

    /// Take the stream out, leaving one that never delivers.
    pub fn take(&mut self) -> SignalStream {
        std::mem::replace(self, SignalStream::none())
    }

    /// The next delivery; false when the signal is not registered (or no more can come).
    pub async fn recv(&mut self) -> bool {
        #[cfg(unix)]
        if let Some(s) = self.0.as_mut() {
            return s.recv().await.is_some();
        }
        false
    }

    async fn recv_or_pending(&mut self) {
        if !self.recv().await {
            std::future::pending::<()>().await;
        }
    }
}
