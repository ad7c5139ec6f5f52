//! The one async runtime builder of the project. Every command (mirror,
//! sync, query, verify, serve) runs its async work on a runtime made here,
//! and no store or source builds one of its own: a store's futures run on
//! the caller's runtime.

use std::io;

/// A multi-threaded runtime with I/O and timers enabled, its worker threads
/// named `sstream`.
///
/// # Errors
///
/// The system refuses a thread or an event queue.
pub fn build() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("sstream")
        .enable_all()
        .build()
}
