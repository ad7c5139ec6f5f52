//! The HTTP server of sstream (`sstream serve`): a static server for a
//! mirror directory, reading the mirror through the `simplestreams` library.
//!
//! It serves the files of the mirror to MAAS (GET and HEAD, single byte
//! ranges, ETag / Last-Modified validators with the conditional headers,
//! If-Range) and to browsers (HTML directory listings, and a landing page at
//! `/` that tells how to point MAAS at the mirror and what it holds, from the
//! mirror's state and status records), and, when asked, the Prometheus
//! metrics of the mirrors at `/metrics`.
//!
//! Never served: `.part` files, dot files and directories (among them the
//! mirror's `.data/` state) and lock files at the root. No request leaves the
//! root: traversal is rejected and symbolic links that resolve outside the
//! root are not followed. The root is the directory the server was started
//! on, held open (module `root`): renaming it or putting a link in its place
//! does not change what is served.
//!
//! SIGTERM, SIGINT and SIGHUP stop it gracefully: no new connections, and
//! the responses in flight get `grace` seconds to finish. Connections stay
//! within the open files limit (module `connections`).
//!
//! The command line calls [`run`] with [`ServeArgs`] (clap arguments with
//! the `clap` feature).

#![warn(missing_docs)]

mod connections;
mod file_body;
mod files;
mod http;
mod logbody;
mod pages;
mod paths;
mod root;
mod summary;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use connections::{Connections, Slot};

/// Options of `sstream serve`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ServeArgs {
    /// The mirror directory to serve.
    pub dir: PathBuf,
    /// Address and port to listen on (port 0 picks a free port).
    #[cfg_attr(feature = "clap", arg(long, default_value = "0.0.0.0:8080"))]
    pub listen: SocketAddr,
    /// Seconds that in-flight responses get to finish after SIGTERM,
    /// SIGINT or SIGHUP before their connections are cut.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "SECONDS", default_value_t = 5)
    )]
    pub grace: u64,
    /// Also serve `/metrics`: the Prometheus metrics of every mirror served
    /// (from the status records `sstream sync` writes).
    #[cfg_attr(feature = "clap", arg(long))]
    pub metrics: bool,
}

/// Why the server could not start (or run).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The directory to serve cannot be opened.
    #[error("serve {}", dir.display())]
    Root {
        /// The directory as given.
        dir: PathBuf,
        /// Why it cannot be opened.
        #[source]
        source: std::io::Error,
    },
    /// What was given to serve is not a directory.
    #[error("serve {}: not a directory", dir.display())]
    NotADirectory {
        /// The path as given.
        dir: PathBuf,
    },
    /// The open files limit cannot be read.
    #[error("serve: cannot read the open files limit")]
    FdLimit(#[source] std::io::Error),
    /// The async runtime cannot start.
    #[error("serve: cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The address cannot be listened on.
    #[error("serve: cannot listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// The bound address cannot be read back.
    #[error("serve: cannot read the bound address")]
    LocalAddr(#[source] std::io::Error),
    /// A stop signal's handler cannot be installed.
    #[error("serve: {signal} handler")]
    Signal {
        /// The signal, e.g. `SIGTERM`.
        signal: &'static str,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// The startup line cannot be written.
    #[error("serve: cannot write to stdout")]
    Stdout(#[source] std::io::Error),
}

/// What [`run`] returns.
pub type Result<T, E = ServeError> = std::result::Result<T, E>;

/// How long a client may take to send the header of a request (also the
/// idle limit of a kept-alive connection between requests).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Failures to accept are reported at most this often.
const ACCEPT_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Runs the server until SIGTERM, SIGINT or SIGHUP.
///
/// Prints `Serving <DIR> at http://<ADDR>:<PORT>/` on stdout once listening
/// (with the real port when `--listen` asked for port 0), writes one access
/// log line per response on stderr, and returns `Ok(())` after a graceful
/// shutdown.
pub fn run(args: ServeArgs) -> Result<()> {
    let root = open_root(&args.dir)?;
    let fd_limit = connections::raise_fd_limit().map_err(ServeError::FdLimit)?;
    let runtime = simplestreams::runtime::build().map_err(ServeError::Runtime)?;
    let result = runtime.block_on(serve(root, args, fd_limit));
    // Connections still open after the grace period are dropped here.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Opens (and pins) the directory to serve.
fn open_root(dir: &Path) -> Result<root::Root> {
    let meta = std::fs::metadata(dir).map_err(|source| ServeError::Root {
        dir: dir.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ServeError::NotADirectory {
            dir: dir.to_owned(),
        });
    }
    root::Root::open(dir).map_err(|source| ServeError::Root {
        dir: dir.to_owned(),
        source,
    })
}

/// The signals that stop the server.
struct StopSignals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl StopSignals {
    /// Installs the handlers (from then on, none of these signals kills the
    /// process).
    fn install() -> Result<Self> {
        let one = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|source| ServeError::Signal {
                signal: name,
                source,
            })
        };
        Ok(StopSignals {
            term: one(SignalKind::terminate(), "SIGTERM")?,
            int: one(SignalKind::interrupt(), "SIGINT")?,
            hup: one(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// What every connection task shares.
#[derive(Clone)]
struct Shared {
    state: Arc<http::State>,
    /// Changes (or closes) when connections must finish.
    shutdown: watch::Receiver<bool>,
    /// Held by every connection task; the sender sees when all are gone.
    alive: watch::Receiver<()>,
}

/// Binds, announces, accepts connections until a signal, then drains.
async fn serve(root: root::Root, args: ServeArgs, fd_limit: u64) -> Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: args.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(ServeError::LocalAddr)?;
    // Install the handlers before announcing, so that a signal sent right
    // after the announcement is never lost.
    let mut signals = StopSignals::install()?;
    announce(&args.dir, local)?;

    let connections = Connections::new(fd_limit);
    eprintln!(
        "serve: open files limit {fd_limit}: at most {} connections at once",
        connections.cap()
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (alive_tx, alive_rx) = watch::channel(());
    let shared = Shared {
        state: Arc::new(http::State::new(root, args.metrics)),
        shutdown: shutdown_rx,
        alive: alive_rx,
    };
    let signal_name =
        accept_until_signal(&listener, local, &connections, &shared, &mut signals).await;
    eprintln!(
        "serve: {signal_name}: stopping: no new connections, up to {}s for the open ones",
        args.grace
    );
    drop(listener);
    drop(shared);
    let _ = shutdown_tx.send(true);
    drain(&alive_tx, signal_name, args.grace).await;
    eprintln!("serve: stopped ({signal_name})");
    Ok(())
}

/// Prints the startup line on stdout.
fn announce(dir: &Path, local: SocketAddr) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "Serving {} at http://{local}/", dir.display())
        .and_then(|()| out.flush())
        .map_err(ServeError::Stdout)
}

/// Accepts connections, within the room [`Connections`] gives, until one of
/// the stop signals arrives; returns its name.
async fn accept_until_signal(
    listener: &TcpListener,
    local: SocketAddr,
    connections: &Arc<Connections>,
    shared: &Shared,
    signals: &mut StopSignals,
) -> &'static str {
    let mut last_report: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            name = signals.next() => return name,
            accepted = async {
                connections.wait_for_room().await;
                listener.accept().await
            } => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let slot = connections.admit();
                spawn_connection(stream, peer, local, slot, shared.clone());
            }
            Err(e) => {
                let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                if last_report.is_none_or(|t| t.elapsed() >= ACCEPT_REPORT_EVERY) {
                    eprintln!("serve: accept failed: {e}");
                    last_report = Some(Instant::now());
                }
                if out_of_fds {
                    // Descriptors held elsewhere (files, listings): make
                    // room, then try again.
                    connections.close_one();
                }
                // Back off instead of spinning.
                let pause = if out_of_fds { 10 } else { 100 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    }
}

/// Serves one connection in its own task until it ends, is told to close
/// to make room, or the server stops (then the response in flight ends and
/// the connection closes).
fn spawn_connection(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    slot: Slot,
    shared: Shared,
) {
    let _ = stream.set_nodelay(true);
    // The address the client reached (not 0.0.0.0), for the landing page.
    let conn_local = stream.local_addr().unwrap_or(local);
    tokio::spawn(async move {
        let Shared {
            state,
            mut shutdown,
            alive,
        } = shared;
        let conn_state = slot.connection().clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            let busy = conn_state.begin_response();
            async move { Ok::<_, Infallible>(http::handle(&state, req, peer, conn_local, busy).await) }
        });
        let mut conn = Box::pin(
            http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service),
        );
        let mut draining = false;
        loop {
            tokio::select! {
                _ = conn.as_mut() => break,
                () = slot.closing() => break,
                _ = shutdown.changed(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
        // The socket (and any file being sent) is closed before the slot
        // is given back.
        drop(conn);
        drop(slot);
        drop(alive);
    });
}

/// Waits up to `grace` seconds for the connection tasks to end.
async fn drain(alive: &watch::Sender<()>, signal_name: &str, grace: u64) {
    let open = alive.receiver_count();
    if open > 0 {
        eprintln!("serve: {signal_name}: waiting up to {grace}s for {open} connection(s)");
    }
    if tokio::time::timeout(Duration::from_secs(grace), alive.closed())
        .await
        .is_err()
    {
        eprintln!(
            "serve: grace period over, cutting {} connection(s)",
            alive.receiver_count()
        );
    }
}
