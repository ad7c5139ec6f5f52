//! The run lock of a bucket: a lease object, `.data/sstream.lock`.
//!
//! - **Taken** with a conditional `PUT` (`If-None-Match: *`): of two runs,
//!   one creates it, the other is told who holds it (or waits, polling).
//!   Right after, the same conditional `PUT` is sent again: a service that
//!   accepts it ignores conditional writes, cannot keep two runs apart, and
//!   is reported as such.
//! - **Held** while the run lasts: a background task renews it (a `PUT`
//!   conditional on the `ETag` of the last renewal) every third of its
//!   lifetime. A renewal that finds another `ETag` means the lease was
//!   taken over: the store then refuses every further write.
//! - **Released** on drop: deleted, unless someone else's by then.
//! - **Taken over** when expired (a conditional `PUT` on the `ETag` seen,
//!   so that of two runs taking it over one wins), or at once when its
//!   holder ran on this machine and its process is gone (a killed run).
//!   An expiry is believed only up to one lifetime after the lease was
//!   last written (its `Last-Modified`): a lease claiming to last longer
//!   (forged, or written with a wrong clock) would otherwise block every
//!   run, and every `--wait`, for as long as it claims. A live holder
//!   rewrites it every third of a lifetime, so this, like the expiry
//!   itself, holds while the clocks (ours, the holder's, the service's)
//!   agree to within two thirds of a lifetime.

use super::{Shared, block_on, s3_error};
use crate::error::{Error, Result};
use crate::layout::{DATA_DIR, LOCK};
use crate::store::Lease;
use bytes::Bytes;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::runtime::Handle;

/// How often a waiting run looks at the lease again.
const POLL: Duration = Duration::from_secs(2);

/// What the lease object holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Record {
    /// The holder's host name.
    host: String,
    /// The holder's process id.
    pid: u32,
    /// The holder's kernel boot id (with the pid namespace: whether a pid
    /// can be looked up here).
    #[serde(default)]
    boot_id: String,
    /// The holder's pid namespace.
    #[serde(default)]
    pid_namespace: String,
    /// When the lease ends unless renewed (seconds since the epoch).
    expires: u64,
}

impl Record {
    fn mine(ttl: Duration) -> Record {
        Record {
            host: host_name(),
            pid: std::process::id(),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            pid_namespace: std::fs::read_link("/proc/self/ns/pid")
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            expires: now_secs() + ttl.as_secs().max(1),
        }
    }

    fn body(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Who holds it, for messages.
    fn holder(&self) -> String {
        let until = UNIX_EPOCH + Duration::from_secs(self.expires);
        format!(
            "host {}, pid {}, lease until {}",
            self.host,
            self.pid,
            humantime::format_rfc3339_seconds(until)
        )
    }

    /// Whether the holder is gone: the lease expired, or its process ran in
    /// this pid namespace of this boot of this machine and has exited.
    fn is_stale(&self) -> bool {
        if self.expires <= now_secs() {
            return true;
        }
        let me = Record::mine(Duration::ZERO);
        let here = !me.boot_id.is_empty()
            && !me.pid_namespace.is_empty()
            && me.boot_id == self.boot_id
            && me.pid_namespace == self.pid_namespace
            && me.host == self.host;
        here && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn host_name() -> String {
    let name = read_trimmed("/proc/sys/kernel/hostname");
    if name.is_empty() {
        std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".into())
    } else {
        name
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A held lease: renewed in the background, deleted on drop.
pub(super) struct S3Lease {
    shared: Arc<Shared>,
    /// The runtime the lease was taken on (the caller's): it renews the
    /// lease and, on drop, releases it.
    handle: Handle,
    key: Key,
    /// The version of the last write of the lease (ours).
    version: Arc<Mutex<UpdateVersion>>,
    renewal: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for S3Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Lease").field("key", &self.key).finish()
    }
}

impl Lease for S3Lease {}

impl Drop for S3Lease {
    fn drop(&mut self) {
        self.renewal.abort();
        let ours = self
            .version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .e_tag
            .clone();
        let (client, key) = (self.shared.client.clone(), self.key.clone());
        let shown = self.shared.display(&lock_rel());
        let limit = self.shared.settings.request_timeout;
        let release = async move {
            let meta = client.head(&key).await?;
            if meta.e_tag.is_some() && meta.e_tag == ours {
                client.delete(&key).await?;
            }
            Ok::<_, object_store::Error>(())
        };
        let released = block_on(&self.handle, &shown, async move {
            tokio::time::timeout(limit, release).await
        });
        let released = match released {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(_)) => {
                log::warn!("{shown}: not released: no answer from the S3 service");
                return;
            }
            Err(e) => Err(e),
        };
        if let Ok(Err(e)) = released
            && !matches!(e, object_store::Error::NotFound { .. })
        {
            log::warn!("{}", s3_error(&self.shared.display(&lock_rel()), &e));
        }
    }
}

fn lock_rel() -> String {
    format!("{DATA_DIR}/{LOCK}")
}

/// What an attempt to take the lease found.
enum Attempt {
    /// Ours, at this version.
    Taken(UpdateVersion),
    /// Someone else's.
    Held(Record),
    /// It changed under us (deleted, or taken over by someone else): look
    /// again.
    Again,
}

/// Takes the lease of `shared`'s mirror: at once, or (`wait`) once its
/// holder releases it or it expires.
pub(super) async fn acquire(shared: &Arc<Shared>, wait: bool) -> Result<S3Lease> {
    let rel = lock_rel();
    let shown = shared.display(&rel);
    let key = Key::parse(shared.target.key(&rel))?;
    let ttl = shared.settings.lease_ttl.max(Duration::from_secs(3));
    let mut told = false;
    loop {
        let record = Record::mine(ttl);
        let attempt = shared
            .bounded(
                &shown,
                try_take(shared.client.clone(), key.clone(), record, ttl),
            )
            .await?;
        match attempt.map_err(|e| s3_error(&shown, &e))? {
            Attempt::Taken(version) => {
                let version = probe_conditional(shared, &key, &shown, version).await?;
                return Ok(start(shared, key, version, ttl));
            }
            Attempt::Again => continue,
            Attempt::Held(holder) if wait => {
                if !told {
                    log::info!("{shown}: waiting for another run ({})", holder.holder());
                    told = true;
                }
                let left = holder.expires.saturating_sub(now_secs()) + 1;
                tokio::time::sleep(POLL.min(Duration::from_secs(left))).await;
            }
            Attempt::Held(holder) => {
                return Err(Error::Locked {
                    path: shown.into(),
                    reason: format!(
                        "another run is mirroring into this bucket ({}); use --wait to wait for it",
                        holder.holder()
                    ),
                });
            }
        }
    }
}

/// One attempt: create the lease, else look at the one there and take it
/// over when stale (its expiry believed up to `ttl` after it was written).
async fn try_take(
    client: Arc<dyn ObjectStore>,
    key: Key,
    record: Record,
    ttl: Duration,
) -> object_store::Result<Attempt> {
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match client.put_opts(&key, record.body().into(), create).await {
        Ok(put) => return Ok(Attempt::Taken(put.into())),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => {}
        Err(e) => return Err(e),
    }
    let found = match client.get(&key).await {
        Ok(found) => found,
        Err(object_store::Error::NotFound { .. }) => return Ok(Attempt::Again),
        Err(e) => return Err(e),
    };
    let seen = UpdateVersion {
        e_tag: found.meta.e_tag.clone(),
        version: found.meta.version.clone(),
    };
    let modified = found.meta.last_modified.timestamp().max(0) as u64;
    let bytes = found.bytes().await?;
    // A lease that does not parse (written by hand, or cut short) lasts a
    // default lifetime from when it was written.
    let mut holder = serde_json::from_slice::<Record>(&bytes).unwrap_or_else(|_| Record {
        host: "unknown (unreadable lease)".into(),
        pid: 0,
        boot_id: String::new(),
        pid_namespace: String::new(),
        expires: modified + 60,
    });
    holder.expires = holder.expires.min(believed_expiry(modified, ttl));
    if !holder.is_stale() {
        return Ok(Attempt::Held(holder));
    }
    log::warn!(
        "{key}: taking over the lease of a run that is gone ({})",
        holder.holder()
    );
    let update = PutOptions {
        mode: PutMode::Update(seen),
        ..PutOptions::default()
    };
    match client.put_opts(&key, record.body().into(), update).await {
        Ok(put) => Ok(Attempt::Taken(put.into())),
        Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => {
            Ok(Attempt::Again)
        }
        Err(e) => Err(e),
    }
}

/// The latest expiry a lease last written at `modified` (seconds since the
/// epoch) is believed to have: one lifetime later (a holder renews it every
/// third of that).
fn believed_expiry(modified: u64, ttl: Duration) -> u64 {
    modified.saturating_add(ttl.as_secs().max(1))
}

/// Checks that the service honours `If-None-Match: *`: creating the lease
/// again must fail. Gives the version of the lease as it now is.
async fn probe_conditional(
    shared: &Arc<Shared>,
    key: &Key,
    shown: &str,
    version: UpdateVersion,
) -> Result<UpdateVersion> {
    let record = Record::mine(shared.settings.lease_ttl);
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let again = shared
        .bounded(
            shown,
            shared.client.put_opts(key, record.body().into(), create),
        )
        .await?;
    match again {
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Ok(version),
        Ok(_) => {
            let _ = shared.bounded(shown, shared.client.delete(key)).await;
            Err(Error::NoConditionalWrites {
                location: shown.to_owned(),
            })
        }
        Err(e) => Err(s3_error(shown, &e)),
    }
}

/// Starts renewing the lease.
fn start(shared: &Arc<Shared>, key: Key, version: UpdateVersion, ttl: Duration) -> S3Lease {
    let version = Arc::new(Mutex::new(version));
    let handle = Handle::current();
    let renewal = handle.spawn(renew(
        shared.client.clone(),
        key.clone(),
        version.clone(),
        ttl,
        shared.lease_lost.clone(),
        shared.display(&lock_rel()),
    ));
    shared.lease_lost.store(false, Ordering::SeqCst);
    S3Lease {
        shared: shared.clone(),
        handle,
        key,
        version,
        renewal,
    }
}

/// Renews the lease every third of `ttl`, each time conditionally on the
/// version of the last renewal. A lease taken over, or not renewed before
/// it expires, is lost: `lost` is set and renewal stops.
async fn renew(
    client: Arc<dyn ObjectStore>,
    key: Key,
    version: Arc<Mutex<UpdateVersion>>,
    ttl: Duration,
    lost: Arc<AtomicBool>,
    shown: String,
) {
    let mut valid_until = now_secs() + ttl.as_secs();
    loop {
        tokio::time::sleep(ttl / 3).await;
        let record = Record::mine(ttl);
        let seen = version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let update = PutOptions {
            mode: PutMode::Update(seen),
            ..PutOptions::default()
        };
        match client.put_opts(&key, record.body().into(), update).await {
            Ok(put) => {
                *version
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = put.into();
                valid_until = record.expires;
            }
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => {
                log::error!("{shown}: the lease was taken over by another run; stopping");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                log::warn!("{}; retrying", s3_error(&shown, &e));
                if now_secs() + 1 >= valid_until {
                    log::error!("{shown}: the lease expired before it could be renewed; stopping");
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}
