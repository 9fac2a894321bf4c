//! The one shutdown path: SIGINT or SIGTERM resolves [`shutdown_signal`].
//! Servers take the signal as an injected future so tests can trigger shutdown
//! without sending signals to the test process.

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
///
/// If a handler cannot be installed the error is logged and that signal is
/// ignored: a service that cannot be stopped by one signal is still stoppable
/// by the other and by SIGKILL, which is better than refusing to start.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };

    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT, shutting down"),
        () = terminate => tracing::info!("received SIGTERM, shutting down"),
    }
}
