//! `tuma serve`: the job runner and the HTTP server in one process, stopped
//! through one cancellation path on SIGINT or SIGTERM.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let listen = config.http.listen;
    let foreground = crate::app::foreground(&config);
    let pool = crate::store::open_with(&config.database, &foreground).await?;
    let app = crate::app::assemble_with(config, pool.clone(), foreground, Clock::Database)?;
    let runner = app.runner.start().await.map_err(|e| anyhow::anyhow!(e))?;

    let shutdown = CancellationToken::new();
    tokio::spawn(signal_to_cancel(shutdown.clone()));

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (http.listen)"))?;
    tracing::info!(%listen, node = runner.node_id(), "tuma serve is up");
    let server_stop = shutdown.clone();
    let service = crate::api::router(app.state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, service)
        .with_graceful_shutdown(async move { server_stop.cancelled().await })
        .await;

    // Whether the server stopped on a signal or an error, stop the runner the
    // same way: finish or release every job in flight.
    shutdown.cancel();
    let report = runner.shutdown().await;
    pool.close().await;
    tracing::info!(released = report.released, "tuma serve stopped");
    served.context("HTTP server failed")
}

/// Cancels `token` on the first SIGINT or SIGTERM.
async fn signal_to_cancel(token: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
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
        _ = interrupt => tracing::info!("SIGINT: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
    token.cancel();
}
