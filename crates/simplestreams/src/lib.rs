//! SimpleStreams: the metadata format, its verification, and a mirror engine.
//!
//! The modules follow the mirroring pipeline:
//!
//! 1. **fetch and verify metadata**: [`source`] reads documents over HTTP(S) or
//!    from files, [`openpgp`] checks clear-signed (`.sjson`) documents, and
//!    [`format`] parses them into typed trees with checked paths ([`path`]).
//! 2. **plan**: [`filter`] and [`select`] decide which items and versions are
//!    wanted; [`plan`] compares that with the mirror's state and yields actions;
//!    [`content`] finds content already stored (linked, not downloaded) and
//!    [`space`] checks the plan against the free space.
//! 3. **execute**: [`execute`] downloads and verifies items in parallel.
//! 4. **publish**: [`store`] writes metadata and state in a safe order;
//!    for a re-signed mirror, [`holdings`] makes the metadata that lists
//!    exactly what the mirror holds.
//!
//! [`retry`] says which failures are retried and how long to wait.
//! [`status`] records each configured job's last run in the mirror, and
//! [`metrics`] renders those records for Prometheus.
//! [`snapshot`] records what a mirror holds, and a [`view`] shows one
//! snapshot, switching atomically on promotion and rollback.
//! [`query`] is a plan over an empty mirror. [`sample`] generates MAAS-like
//! sample streams for demos and tests.

#![warn(missing_docs)]

pub mod audit;
pub mod bookkeeping;
pub mod cache;
pub mod content;
pub mod durable;
pub mod error;
pub mod execute;
pub mod filter;
pub mod format;
pub mod hash;
pub mod holdings;
pub mod json;
pub mod layout;
pub mod metadata;
pub mod metrics;
pub mod mirror;
pub mod openpgp;
pub mod path;
pub mod plan;
pub mod query;
pub mod resign;
pub mod retry;
pub mod runtime;
pub mod sample;
pub mod select;
pub mod snapshot;
pub mod source;
pub mod space;
pub mod status;
pub mod store;
pub mod units;
pub mod view;
pub mod view_state;

pub use error::{Error, Result};
