//! An item staged in a bucket: buffered, and from the first full part on
//! streamed into a multipart upload (one part in flight while the next
//! fills). [`Staged::commit`] sends the rest (one `PUT` for an item smaller
//! than a part) and completes the upload; anything else aborts it. A
//! multipart upload is invisible until it is completed, so nothing
//! unverified ever appears under the item's key.
//!
//! The writes come from the download's writer thread (see [`Staged`]): a
//! full part is handed to the caller's runtime (its `Handle`) and sent
//! while the thread goes on receiving; the thread waits only for the part
//! before it. Commit and discard are async.

use super::{Shared, block_on, s3_error};
use crate::error::{Error, Result};
use crate::store::Staged;
use bytes::Bytes;
use object_store::path::Path as Key;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The size of a part (S3 wants at least 5 MiB but for the last one); it
/// doubles every [`PARTS_PER_STEP`] parts so that 10 000 parts reach far
/// beyond any image.
const PART_SIZE: usize = 8 << 20;
/// Parts of one size before the size doubles.
const PARTS_PER_STEP: usize = 1000;

/// A download into the bucket.
pub(super) struct Upload {
    shared: Arc<Shared>,
    /// The runtime the parts are sent on (the caller's).
    handle: Handle,
    key: Key,
    shown: String,
    /// Bytes not sent yet.
    buffer: Vec<u8>,
    /// The multipart upload, from the first full part on.
    multipart: Option<Box<dyn MultipartUpload>>,
    /// The part being sent.
    in_flight: Option<JoinHandle<object_store::Result<()>>>,
    /// Parts sent (or being sent).
    parts: usize,
}

impl Upload {
    pub(super) fn new(shared: Arc<Shared>, handle: Handle, key: Key, shown: String) -> Upload {
        Upload {
            shared,
            handle,
            key,
            shown,
            buffer: Vec::new(),
            multipart: None,
            in_flight: None,
            parts: 0,
        }
    }

    fn part_size(&self) -> usize {
        PART_SIZE << (self.parts / PARTS_PER_STEP).min(4)
    }

    fn error(&self, e: &object_store::Error) -> Error {
        s3_error(&self.shown, e)
    }

    /// Waits for the part in flight (from the writer thread).
    fn wait_in_flight(&mut self) -> Result<()> {
        let Some(task) = self.in_flight.take() else {
            return Ok(());
        };
        match block_on(&self.handle, &self.shown, task)? {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.error(&e)),
            Err(e) => Err(Error::transfer(
                &self.shown,
                format!("upload of a part: {e}"),
            )),
        }
    }

    /// Sends `part` as the next part (starting the multipart upload first
    /// when needed), once the previous one has arrived.
    fn send_part(&mut self, part: Vec<u8>) -> Result<()> {
        if self.multipart.is_none() {
            let (client, key) = (self.shared.client.clone(), self.key.clone());
            let started = block_on(&self.handle, &self.shown, async move {
                client.put_multipart(&key).await
            })?;
            self.multipart = Some(started.map_err(|e| self.error(&e))?);
        }
        self.wait_in_flight()?;
        let Some(multipart) = self.multipart.as_mut() else {
            return Err(Error::transfer(&self.shown, "no multipart upload"));
        };
        let sending = multipart.put_part(PutPayload::from(Bytes::from(part)));
        self.in_flight = Some(self.handle.spawn(sending));
        self.parts += 1;
        Ok(())
    }

    /// Drops what was sent: the part in flight, and gives the multipart
    /// upload to abort, if any.
    fn drop_sent(&mut self) -> Option<Box<dyn MultipartUpload>> {
        self.buffer = Vec::new();
        self.parts = 0;
        if let Some(task) = self.in_flight.take() {
            task.abort();
        }
        self.multipart.take()
    }

    /// Drops what was sent, the upload aborted in the background.
    fn abort_in_background(&mut self) {
        if let Some(mut multipart) = self.drop_sent() {
            drop(self.handle.spawn(async move { multipart.abort().await }));
        }
    }

    /// Drops what was sent, waiting for the upload to be aborted (from the
    /// writer thread).
    fn abort_blocking(&mut self) -> Result<()> {
        let Some(mut multipart) = self.drop_sent() else {
            return Ok(());
        };
        let aborted = block_on(
            &self.handle,
            &self.shown,
            async move { multipart.abort().await },
        )?;
        self.aborted(aborted)
    }

    /// Drops what was sent, awaiting the upload's abort.
    async fn abort(&mut self) -> Result<()> {
        let Some(mut multipart) = self.drop_sent() else {
            return Ok(());
        };
        let aborted = multipart.abort().await;
        self.aborted(aborted)
    }

    fn aborted(&self, result: object_store::Result<()>) -> Result<()> {
        match result {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(&e)),
        }
    }

    /// One `PUT` of the whole (small) item.
    async fn put_whole(&mut self) -> Result<()> {
        let (client, key) = (self.shared.client.clone(), self.key.clone());
        let body = PutPayload::from(std::mem::take(&mut self.buffer));
        let opts = PutOptions {
            mode: PutMode::Overwrite,
            ..PutOptions::default()
        };
        match put(client, key, body, opts).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.error(&e)),
        }
    }

    /// Sends the rest as the last part and completes the upload.
    async fn complete(&mut self) -> Result<()> {
        let Some(multipart) = self.multipart.as_mut() else {
            return Err(Error::transfer(&self.shown, "no multipart upload"));
        };
        let last = (!self.buffer.is_empty())
            .then(|| multipart.put_part(PutPayload::from(std::mem::take(&mut self.buffer))));
        self.finish_in_flight().await?;
        if let Some(last) = last {
            self.parts += 1;
            last.await.map_err(|e| self.error(&e))?;
        }
        let Some(multipart) = self.multipart.as_mut() else {
            return Err(Error::transfer(&self.shown, "no multipart upload"));
        };
        match multipart.complete().await {
            Ok(_) => {
                self.multipart = None;
                Ok(())
            }
            Err(e) => Err(self.error(&e)),
        }
    }

    /// Awaits the part in flight.
    async fn finish_in_flight(&mut self) -> Result<()> {
        let Some(task) = self.in_flight.take() else {
            return Ok(());
        };
        match task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.error(&e)),
            Err(e) => Err(Error::transfer(
                &self.shown,
                format!("upload of a part: {e}"),
            )),
        }
    }
}

async fn put(
    client: Arc<dyn ObjectStore>,
    key: Key,
    body: PutPayload,
    opts: PutOptions,
) -> object_store::Result<()> {
    client.put_opts(&key, body, opts).await.map(|_| ())
}

#[async_trait::async_trait]
impl Staged for Upload {
    /// Nothing is resumed: an unfinished multipart upload cannot be read
    /// back to hash what it holds.
    fn staged_len(&self) -> u64 {
        0
    }

    fn begin(&mut self, keep: u64, _consume: &mut dyn FnMut(&[u8])) -> Result<()> {
        if keep > 0 {
            return Err(Error::transfer(
                &self.shown,
                "an upload cannot be resumed (nothing was staged)",
            ));
        }
        self.abort_blocking()
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.buffer.extend_from_slice(data);
        while self.buffer.len() >= self.part_size() {
            let size = self.part_size();
            // Room for the chunk that will overflow the part.
            let mut next = Vec::with_capacity(size + size / 8);
            next.extend_from_slice(&self.buffer[size..]);
            let mut part = std::mem::replace(&mut self.buffer, next);
            part.truncate(size);
            self.send_part(part)?;
        }
        Ok(())
    }

    /// Waits for the part in flight: what is written so far has reached
    /// the service (the rest waits for [`Staged::commit`]).
    fn sync(&mut self) -> Result<()> {
        self.wait_in_flight()
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.shared.check_lease(&self.shown)?;
        let result = if self.multipart.is_none() {
            self.put_whole().await
        } else {
            self.complete().await
        };
        if result.is_err() {
            self.abort_in_background();
        }
        result
    }

    async fn discard(mut self: Box<Self>) -> Result<()> {
        self.abort().await
    }

    fn describe(&self) -> String {
        format!("{} (upload)", self.shown)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.abort_in_background();
    }
}
