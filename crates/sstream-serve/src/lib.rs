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
//! It listens for plain HTTP (`--listen`) and HTTPS (`--listen-tls`, with
//! `--tls-cert` and `--tls-key`; module `tls`), on as many addresses as
//! given, and serves the same on each.
//!
//! SIGTERM and SIGINT stop it gracefully: no new connections, and the
//! responses in flight get `grace` seconds to finish. SIGHUP does the same
//! when it serves no HTTPS; with HTTPS, SIGHUP reloads the certificate and
//! key instead (connections already open keep theirs; a pair that fails to
//! load is logged and the one in use kept). Connections stay within the
//! open files limit (module `connections`).
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
mod tls;

pub use tls::TlsError;

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
    /// Address and port to serve plain HTTP on (repeatable; port 0 picks a
    /// free port). Without `--listen` and `--listen-tls`: 0.0.0.0:8080.
    #[cfg_attr(feature = "clap", arg(long, value_name = "ADDR"))]
    pub listen: Vec<SocketAddr>,
    /// Address and port to serve HTTPS on (repeatable; port 0 picks a free
    /// port). Needs `--tls-cert` and `--tls-key`.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "ADDR", requires_all = ["tls_cert", "tls_key"])
    )]
    pub listen_tls: Vec<SocketAddr>,
    /// The HTTPS certificate chain (PEM): the server's certificate first,
    /// then the CA certificates that sign it. Reloaded on SIGHUP.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "CHAIN.pem", requires_all = ["tls_key", "listen_tls"])
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of the HTTPS certificate (PEM). Reloaded on SIGHUP.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "KEY.pem", requires_all = ["tls_cert", "listen_tls"])
    )]
    pub tls_key: Option<PathBuf>,
    /// Seconds that in-flight responses get to finish after SIGTERM or
    /// SIGINT (or SIGHUP without HTTPS) before their connections are cut.
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
    /// `--listen-tls`, `--tls-cert` and `--tls-key` go together.
    #[error("serve: --listen-tls, --tls-cert and --tls-key must be given together")]
    TlsOptions,
    /// The certificate or key for HTTPS cannot be used.
    #[error("serve: HTTPS certificate")]
    Tls(#[source] TlsError),
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

/// Runs the server until SIGTERM or SIGINT (or SIGHUP, without HTTPS).
///
/// Prints `Serving <DIR> at http://<ADDR>:<PORT>/` on stdout for every
/// HTTP listener, then `Serving <DIR> at https://<ADDR>:<PORT>/` for every
/// HTTPS one, once listening (with the real port when port 0 was asked
/// for), writes one access log line per response on stderr, and returns
/// `Ok(())` after a graceful shutdown.
pub fn run(args: ServeArgs) -> Result<()> {
    let tls = load_tls(&args)?;
    let root = open_root(&args.dir)?;
    let fd_limit = connections::raise_fd_limit().map_err(ServeError::FdLimit)?;
    let runtime = simplestreams::runtime::build().map_err(ServeError::Runtime)?;
    let result = runtime.block_on(serve(root, args, tls, fd_limit));
    // Connections still open after the grace period are dropped here.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Loads the HTTPS certificate when HTTPS is asked for.
fn load_tls(args: &ServeArgs) -> Result<Option<tls::Tls>> {
    match (&args.tls_cert, &args.tls_key, args.listen_tls.is_empty()) {
        (None, None, true) => Ok(None),
        (Some(cert), Some(key), false) => {
            let files = tls::CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            };
            tls::Tls::load(files).map(Some).map_err(ServeError::Tls)
        }
        _ => Err(ServeError::TlsOptions),
    }
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

/// How a listener's connections speak.
#[derive(Clone)]
enum Transport {
    /// Plain HTTP.
    Http,
    /// HTTPS: a TLS handshake first.
    Https(tokio_rustls::TlsAcceptor),
}

impl Transport {
    fn scheme(&self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Https(_) => "https",
        }
    }
}

/// A bound listener and what its connections speak.
struct Listener {
    socket: TcpListener,
    local: SocketAddr,
    transport: Transport,
}

/// Binds every address asked for: the HTTP ones first, then the HTTPS ones.
async fn bind_all(args: &ServeArgs, tls: Option<&tls::Tls>) -> Result<Vec<Listener>> {
    let mut plan: Vec<(SocketAddr, Transport)> = Vec::new();
    let mut http = args.listen.clone();
    if http.is_empty() && args.listen_tls.is_empty() {
        http.push(SocketAddr::from(([0, 0, 0, 0], 8080)));
    }
    plan.extend(http.into_iter().map(|a| (a, Transport::Http)));
    if let Some(tls) = tls {
        let https = Transport::Https(tls.acceptor());
        plan.extend(args.listen_tls.iter().map(|&a| (a, https.clone())));
    }
    let mut listeners = Vec::with_capacity(plan.len());
    for (addr, transport) in plan {
        let socket = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen { addr, source })?;
        let local = socket.local_addr().map_err(ServeError::LocalAddr)?;
        listeners.push(Listener {
            socket,
            local,
            transport,
        });
    }
    Ok(listeners)
}

/// Binds, announces, accepts connections until a stop signal (reloading
/// the certificate on SIGHUP when serving HTTPS), then drains.
async fn serve(
    root: root::Root,
    args: ServeArgs,
    tls: Option<tls::Tls>,
    fd_limit: u64,
) -> Result<()> {
    let listeners = bind_all(&args, tls.as_ref()).await?;
    // Install the handlers before announcing, so that a signal sent right
    // after the announcement is never lost.
    let mut signals = StopSignals::install()?;
    announce(&args.dir, &listeners)?;

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
    let (stop_accepting, accepting) = watch::channel(false);
    let acceptors: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            tokio::spawn(accept_until_stopped(
                listener,
                connections.clone(),
                shared.clone(),
                accepting.clone(),
            ))
        })
        .collect();
    let signal_name = wait_for_stop(&mut signals, tls.as_ref()).await;
    eprintln!(
        "serve: {signal_name}: stopping: no new connections, up to {}s for the open ones",
        args.grace
    );
    // The listeners close as their accept loops end.
    let _ = stop_accepting.send(true);
    for acceptor in acceptors {
        let _ = acceptor.await;
    }
    drop(shared);
    let _ = shutdown_tx.send(true);
    drain(&alive_tx, signal_name, args.grace).await;
    eprintln!("serve: stopped ({signal_name})");
    Ok(())
}

/// Waits for a stop signal and returns its name; with HTTPS, SIGHUP
/// reloads the certificate instead of stopping.
async fn wait_for_stop(signals: &mut StopSignals, tls: Option<&tls::Tls>) -> &'static str {
    loop {
        let name = signals.next().await;
        match (name, tls) {
            ("SIGHUP", Some(tls)) => reload(tls),
            _ => return name,
        }
    }
}

/// Reloads the certificate and key, logging the outcome.
fn reload(tls: &tls::Tls) {
    let files = tls.files();
    match tls.reload() {
        Ok(()) => eprintln!(
            "serve: SIGHUP: reloaded the certificate {} and key {}",
            files.cert.display(),
            files.key.display()
        ),
        Err(e) => eprintln!(
            "serve: SIGHUP: keeping the certificate in use: {}",
            error_chain(&e)
        ),
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

/// Prints the startup lines on stdout, one per listener.
fn announce(dir: &Path, listeners: &[Listener]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    listeners
        .iter()
        .try_for_each(|l| {
            writeln!(
                out,
                "Serving {} at {}://{}/",
                dir.display(),
                l.transport.scheme(),
                l.local
            )
        })
        .and_then(|()| out.flush())
        .map_err(ServeError::Stdout)
}

/// Accepts connections on one listener, within the room [`Connections`]
/// gives, until told to stop; the listener closes when it returns.
async fn accept_until_stopped(
    listener: Listener,
    connections: Arc<Connections>,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_report: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            accepted = async {
                connections.wait_for_room().await;
                listener.socket.accept().await
            } => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let slot = connections.admit();
                let conn = Accepted {
                    stream,
                    peer,
                    local: listener.local,
                    transport: listener.transport.clone(),
                };
                spawn_connection(conn, slot, shared.clone());
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

/// A connection just accepted.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    /// The listener's address.
    local: SocketAddr,
    transport: Transport,
}

/// Serves one connection in its own task until it ends, is told to close
/// to make room, or the server stops (then the response in flight ends and
/// the connection closes). An HTTPS connection first completes its TLS
/// handshake, within the time a request header gets.
fn spawn_connection(conn: Accepted, slot: Slot, shared: Shared) {
    let Accepted {
        stream,
        peer,
        local,
        transport,
    } = conn;
    let _ = stream.set_nodelay(true);
    // The address the client reached (not 0.0.0.0), for the landing page.
    let conn_local = stream.local_addr().unwrap_or(local);
    tokio::spawn(async move {
        let mut shutdown = shared.shutdown.clone();
        match transport {
            Transport::Http => {
                let io = TokioIo::new(stream);
                serve_connection(io, peer, conn_local, "http", &slot, shared).await;
            }
            Transport::Https(acceptor) => {
                let handshake = tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream));
                let tls_stream = tokio::select! {
                    done = handshake => match done {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            eprintln!("serve: TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => {
                            eprintln!("serve: TLS handshake with {peer} timed out");
                            return;
                        }
                    },
                    () = slot.closing() => return,
                    _ = shutdown.changed() => return,
                };
                let io = TokioIo::new(tls_stream);
                serve_connection(io, peer, conn_local, "https", &slot, shared).await;
            }
        }
        // The socket (and any file being sent) is closed before the slot
        // is given back.
        drop(slot);
    });
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it ends.
async fn serve_connection<S>(
    io: TokioIo<S>,
    peer: SocketAddr,
    conn_local: SocketAddr,
    scheme: &'static str,
    slot: &Slot,
    shared: Shared,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Shared {
        state,
        mut shutdown,
        alive,
    } = shared;
    let conn_state = slot.connection().clone();
    let service = service_fn(move |req| {
        let state = state.clone();
        let busy = conn_state.begin_response();
        async move {
            Ok::<_, Infallible>(http::handle(&state, req, peer, conn_local, scheme, busy).await)
        }
    });
    let mut conn = Box::pin(
        http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(io, service),
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
    drop(conn);
    drop(alive);
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
