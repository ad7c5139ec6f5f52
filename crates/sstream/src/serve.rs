//! `sstream serve`: a static HTTP server for a mirror directory.
//!
//! STUB: being written.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Options of `sstream serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The mirror directory to serve.
    pub dir: PathBuf,
    /// Address and port to listen on (port 0 picks a free port).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> Result<(), String> {
    Err(format!("serve {}: not implemented yet", args.dir.display()))
}
