//! `sstream serve`: a static HTTP server for a mirror directory.
//!
//! It serves the files of the mirror to MAAS (GET and HEAD, single byte
//! ranges, ETag / Last-Modified validators with the conditional headers,
//! If-Range) and to browsers (HTML directory listings, and a landing page at
//! `/` that tells how to point MAAS at the mirror and what it holds).
//!
//! Never served: `.part` files, dot files and directories (among them the
//! mirror's `.data/` state) and lock files at the root. No request leaves the
//! root: traversal is rejected and symbolic links that resolve outside the
//! root are not followed.

mod files;
mod http;
mod logbody;
mod pages;
mod paths;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Options of `sstream serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The mirror directory to serve.
    pub dir: PathBuf,
    /// Address and port to listen on (port 0 picks a free port).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Seconds that in-flight responses get to finish after SIGTERM or
    /// SIGINT before their connections are cut.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub grace: u64,
}

/// How long a client may take to send the header of a request (also the
/// idle limit of a kept-alive connection between requests).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the server until SIGINT or SIGTERM.
///
/// Prints `Serving <DIR> at http://<ADDR>:<PORT>/` on stdout once listening
/// (with the real port when `--listen` asked for port 0), writes one access
/// log line per response on stderr, and returns `Ok(())` after a graceful
/// shutdown.
pub fn run(args: ServeArgs) -> Result<(), String> {
    let root = std::fs::canonicalize(&args.dir)
        .map_err(|e| format!("serve {}: {e}", args.dir.display()))?;
    if !root.is_dir() {
        return Err(format!("serve {}: not a directory", args.dir.display()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("serve: cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(serve(root, args));
    // Connections still open after the grace period are dropped here.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Binds, announces, accepts connections until a signal, then drains.
async fn serve(root: PathBuf, args: ServeArgs) -> Result<(), String> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("serve: cannot listen on {}: {e}", args.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("serve: cannot read the bound address: {e}"))?;
    // Install the handlers before announcing, so that a signal sent right
    // after the announcement is never lost.
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| format!("serve: SIGTERM handler: {e}"))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| format!("serve: SIGINT handler: {e}"))?;

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "Serving {} at http://{local}/", args.dir.display())
            .and_then(|()| out.flush())
            .map_err(|e| format!("serve: cannot write to stdout: {e}"))?;
    }

    let state = Arc::new(http::State::new(root));
    // Dropping `shutdown_tx` (or sending) tells connections to finish.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Every connection task holds a clone of `close_rx`; `close_tx.closed()`
    // resolves once all of them are gone.
    let (close_tx, close_rx) = watch::channel(());

    let signal_name = loop {
        let (stream, peer) = tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    eprintln!("serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // The address the client reached (not 0.0.0.0), for the landing page.
        let conn_local = stream.local_addr().unwrap_or(local);
        let state = state.clone();
        let mut shutdown_rx = shutdown_rx.clone();
        let close_rx = close_rx.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(http::handle(&state, req, peer, conn_local).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let mut draining = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    _ = shutdown_rx.changed(), if !draining => {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(close_rx);
        });
    };
    drop(listener);
    drop(close_rx);
    let _ = shutdown_tx.send(true);
    let open = close_tx.receiver_count();
    if open > 0 {
        eprintln!(
            "serve: {signal_name}: waiting up to {}s for {open} connection(s)",
            args.grace
        );
    }
    if tokio::time::timeout(Duration::from_secs(args.grace), close_tx.closed())
        .await
        .is_err()
    {
        eprintln!(
            "serve: grace period over, cutting {} connection(s)",
            close_tx.receiver_count()
        );
    }
    eprintln!("serve: stopped ({signal_name})");
    Ok(())
}
