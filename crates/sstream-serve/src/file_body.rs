//! The body of a file response: a range of an open file, read in large
//! chunks straight into the buffers that hyper sends (no copy between
//! buffers).
//!
//! A chunk in the page cache (the usual case for a mirror's images being
//! fetched) is read right in the connection's task with
//! `preadv2(RWF_NOWAIT)`, which never waits for the disk: no hand-off to
//! another thread, as nginx reads. Only when the kernel answers that the
//! data is not cached (or the file system cannot tell) is the chunk read on
//! the blocking thread pool, so that a slow disk never stalls the other
//! connections.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;

/// Bytes read at a time: few system calls, and small enough for the chunk
/// to stay in the CPU cache between the read and the socket write (hyper
/// asks for the next one when less than ~400 KiB is left to send).
const CHUNK: usize = 512 * 1024;

/// `len` bytes of `file` from `offset`, as a [`http_body::Body`].
pub(crate) struct FileBody {
    file: Arc<File>,
    /// Where the next read starts.
    offset: u64,
    /// Bytes not read yet.
    remaining: u64,
    /// Whether reads from the page cache without waiting are worth trying
    /// (false once the file system said it does not support them).
    try_cached: bool,
    /// A chunk being read on the blocking pool.
    pending: Option<JoinHandle<io::Result<Bytes>>>,
    /// Chunks read on the blocking pool so far.
    blocking_reads: u64,
}

impl FileBody {
    /// The body of `len` bytes of `file` starting at `offset`. The file
    /// growing meanwhile adds nothing; if it shrinks, the body fails where
    /// the data ends (the client sees a short response).
    pub(crate) fn new(file: File, offset: u64, len: u64) -> Self {
        FileBody {
            file: Arc::new(file),
            offset,
            remaining: len,
            try_cached: true,
            pending: None,
            blocking_reads: 0,
        }
    }

    fn next_len(&self) -> usize {
        usize::try_from(self.remaining).map_or(CHUNK, |r| r.min(CHUNK))
    }

    /// Accounts for a chunk read; an empty one means the file shrank.
    fn advance(&mut self, chunk: Bytes) -> io::Result<Frame<Bytes>> {
        if chunk.is_empty() {
            // `remaining` stays: the body did not end, it failed.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being sent",
            ));
        }
        let n = chunk.len() as u64;
        self.offset += n;
        self.remaining = self.remaining.saturating_sub(n);
        Ok(Frame::data(chunk))
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = &mut *self;
        if let Some(pending) = &mut this.pending {
            let joined = ready!(Pin::new(pending).poll(cx));
            this.pending = None;
            let chunk = joined.map_err(io::Error::other).and_then(|r| r);
            return Poll::Ready(Some(chunk.and_then(|c| this.advance(c))));
        }
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = this.next_len();
        if this.try_cached {
            match read_at(&this.file, this.offset, len, libc::RWF_NOWAIT) {
                Ok(chunk) => return Poll::Ready(Some(this.advance(chunk))),
                // Not (all) in the page cache.
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {
                    this.try_cached = false;
                }
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
        let (file, offset) = (this.file.clone(), this.offset);
        this.blocking_reads += 1;
        this.pending = Some(tokio::task::spawn_blocking(move || {
            read_at(&file, offset, len, 0)
        }));
        // Poll the read once, which registers for its completion.
        self.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && self.pending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Reads up to `len` bytes of `file` at `offset` with `preadv2(flags)`
/// into a new buffer (left uninitialised until the kernel fills it).
/// Retries when interrupted; an empty result means end of file.
fn read_at(file: &File, offset: u64, len: usize, flags: libc::c_int) -> io::Result<Bytes> {
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = BytesMut::with_capacity(len);
    let spare = buf.spare_capacity_mut();
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: len.min(spare.len()),
    };
    let n = loop {
        // SAFETY: `iov` describes `iov_len` writable bytes of `buf`'s spare
        // capacity, which outlives the call; the descriptor is open (we
        // hold `file`). The kernel writes at most `iov_len` bytes there.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, off, flags) };
        if n >= 0 {
            break n;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let n = usize::try_from(n)
        .map_err(io::Error::other)?
        .min(iov.iov_len);
    // SAFETY: the kernel initialised the first `n` bytes of the spare
    // capacity, and `n <= iov_len <= capacity`.
    unsafe { buf.set_len(n) };
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// The bytes of a body, and how many chunks it read on the blocking
    /// pool.
    async fn collect(mut body: FileBody) -> (io::Result<Vec<u8>>, u64) {
        let mut out = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await
        {
            match frame {
                Ok(f) => {
                    if let Ok(data) = f.into_data() {
                        out.extend_from_slice(&data);
                    }
                }
                Err(e) => return (Err(e), body.blocking_reads),
            }
        }
        (Ok(out), body.blocking_reads)
    }

    fn sample(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
        let path = dir.join("f");
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        (path, data)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ranges_of_a_file_across_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, data) = sample(dir.path());
        let open = || File::open(&path).expect("open");
        let (all, _) = collect(FileBody::new(open(), 0, data.len() as u64)).await;
        assert_eq!(all.expect("read"), data);
        let (part, _) = collect(FileBody::new(open(), 5, CHUNK as u64 + 3)).await;
        assert_eq!(part.expect("read"), &data[5..CHUNK + 8]);
        // Longer than the file: fails where the data ends.
        let (over, _) = collect(FileBody::new(open(), 10, data.len() as u64)).await;
        let err = over.expect_err("short");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn data_not_in_the_page_cache_is_read_on_the_blocking_pool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, data) = sample(dir.path());
        let file = File::open(&path).expect("open");
        // Written back, then dropped from the page cache.
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.sync_all())
            .expect("fsync");
        // SAFETY: plain system call on an open descriptor.
        let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0);
        let (all, blocking) = collect(FileBody::new(file, 0, data.len() as u64)).await;
        assert_eq!(all.expect("read"), data);
        assert!(blocking > 0, "an uncached chunk was read without waiting?");

        // Once cached, no chunk goes to the blocking pool (on file systems
        // that support RWF_NOWAIT, as ext4, xfs and btrfs do).
        let file = File::open(&path).expect("open");
        let mut whole = vec![0; data.len()];
        file.read_exact_at(&mut whole, 0).expect("read");
        let (again, blocking) = collect(FileBody::new(file, 0, data.len() as u64)).await;
        assert_eq!(again.expect("read"), data);
        assert_eq!(blocking, 0);
    }
}
