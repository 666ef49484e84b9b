//! The `integers` server binary: flags, logging, signals.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use integers::config::LogFormat;
use integers::{Config, server};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    init_logging(config.log_format);
    if let Err(why) = config.check() {
        error!(why, "cannot start");
        return ExitCode::FAILURE;
    }

    let listener = match server::bind(&config) {
        Ok(listener) => listener,
        Err(error) => {
            error!(host = %config.host, port = config.port, %error, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match server::serve(listener, config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!(%error, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at the `RUST_LOG` level (default `info`). JSON lines carry the fields
/// `timestamp`, `level`, `target`, `message` and the event's own fields (a raw client's
/// `parity` and `peer` among them), and a socket.io client's events also `span`, with its
/// `parity`, `peer`, `ns` and `sid`.
fn init_logging(format: Option<LogFormat>) {
    let terminal = std::io::stderr().is_terminal();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A failed write (the reader of a stderr pipe gone) loses the line and nothing else: the
    // default reports it with `eprintln!`, which panics the task that logged.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let pretty = match format {
        Some(format) => format == LogFormat::Pretty,
        None => terminal,
    };
    if pretty {
        builder.with_ansi(terminal).init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    }
}

/// Cancels `shutdown` on SIGINT (Ctrl-C) or SIGTERM (what platforms send on deploy).
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    let signal = tokio::select! {
        _ = ctrl_c => "SIGINT",
        _ = terminate => "SIGTERM",
    };
    // Shut down first, then say so: the shutdown must not depend on the log.
    shutdown.cancel();
    info!(signal, "shutting down");
}
