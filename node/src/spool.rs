//! The output spool: each attempt's output in a file of its own, `<data_dir>/spool/<task>-<attempt>.log`.
//! The executor writes it (up to the cap, then the marker: [`SpoolWriter`]), the host reads the
//! chunk its origin needs next at send time ([`read_chunk`]) and removes the file once the origin
//! has the result. So an attempt's output costs this node disk, never memory beyond one chunk,
//! whatever its origin's speed, and a restarted node still has it.
//!
//! Never follows a symlink (files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`, opened with
//! `O_NOFOLLOW`; removal unlinks the name itself), never touches anything outside its directory,
//! and never decides what the cap is: [`crate::output_cap`] does.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use orgmesh_protocol::{Attempt, TaskId};

/// The line a spool ends with when writing it failed (a full disk, most likely): what was written
/// before is the output, the rest was read and dropped so the task still ends.
pub fn write_failed_marker() -> Vec<u8> {
    b"\n[orgmesh: output cut here: this node could not write it to its spool (disk full?)]\n".to_vec()
}

/// The directory spools live in.
#[derive(Debug, Clone)]
pub struct SpoolDir {
    dir: PathBuf,
}

impl SpoolDir {
    /// The spool directory `dir` (created, mode 0700, if missing). Nothing is opened or checked:
    /// a directory that cannot be created shows as attempts failing to create their spool.
    pub fn new(dir: PathBuf) -> Self {
        if fs::create_dir_all(&dir).is_ok() {
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        }
        Self { dir }
    }

    /// Where the spool of one attempt is.
    pub fn path(&self, task: TaskId, attempt: Attempt) -> PathBuf {
        self.dir.join(file_name(task, attempt))
    }

    /// Removes the spool of one attempt (if any). Unlinks the name, whatever it is: a symlink
    /// planted there is removed, never followed.
    pub fn remove(&self, task: TaskId, attempt: Attempt) {
        match fs::remove_file(self.path(task, attempt)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(task = %task, attempt = %attempt, error = %e, "cannot remove spool"),
        }
    }

    /// Removes every spool except those of `keep` (attempts whose output is still owed): what an
    /// earlier run left. Directories are left alone. Returns how many files were removed.
    pub fn reap(&self, keep: &[(TaskId, Attempt)]) -> usize {
        let keep: Vec<String> = keep.iter().map(|(t, a)| file_name(*t, *a)).collect();
        let Ok(entries) = fs::read_dir(&self.dir) else { return 0 };
        let mut removed = 0;
        for entry in entries.flatten() {
            // `DirEntry::file_type` does not follow symlinks.
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(true);
            let name = entry.file_name();
            if is_dir || keep.iter().any(|k| name.as_encoded_bytes() == k.as_bytes()) {
                continue;
            }
            if fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

fn file_name(task: TaskId, attempt: Attempt) -> String {
    format!("{task}-{}.log", attempt.0)
}

/// Creates a new spool file for writing: fails if anything (a file, a symlink) is there already.
pub fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens a spool file for reading, refusing a symlink.
pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)
}

/// Writes `bytes` at `offset` of the spool at `path`, creating it if missing: how a record written
/// before the spool existed (its undelivered output kept in the store) is moved into one. Bytes
/// before `offset` were delivered already and are never read: the file has a hole there.
pub fn write_at(path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
    let file = match create(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)?
        }
        Err(e) => return Err(e),
    };
    file.write_all_at(bytes, offset)
}

/// Reads up to `max` bytes at `offset`: fewer only at the end of the file. A positional read of
/// at most one protocol chunk, from a file just written (in the page cache, mostly): short
/// enough to do on the event loop, where a blocking-pool round trip would cost more state than
/// the read costs time.
pub fn read_chunk(file: &File, offset: u64, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; max];
    let mut got = 0;
    while got < max {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// What [`SpoolWriter::push`] did with the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Below the cap: output is written.
    Open,
    /// Cut at the cap (marker written): the rest is dropped.
    Cut,
    /// A write failed: the rest is dropped.
    Failed,
}

/// Writes an attempt's output into its spool: the first `cap` bytes, then the cap's marker once
/// and nothing more; or, if a write fails, what was written, the write-failed marker (if even
/// that can be written) and nothing more. Never blocks on anything but the write itself, and
/// never fails: output it cannot keep is dropped, so the task's pipe is always drained.
#[derive(Debug)]
pub struct SpoolWriter<W> {
    out: W,
    cap: u64,
    /// Output bytes kept (the marker not counted).
    kept: u64,
    /// Bytes in the spool (the marker counted): what the host may read.
    len: u64,
    state: State,
    /// SHA-256 of those `len` bytes, for the attempt's receipt.
    digest: sha2::Sha256,
}

impl<W: Write> SpoolWriter<W> {
    /// A writer keeping at most `cap` output bytes in `out`.
    pub fn new(out: W, cap: u64) -> Self {
        Self { out, cap, kept: 0, len: 0, state: State::Open, digest: sha2::Sha256::default() }
    }

    /// SHA-256 of every byte in the spool so far (markers included): what the origin receives.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        self.digest.clone().finalize().into()
    }

    /// Bytes in the spool so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether a write failed (the spool ends with the write-failed marker, if it could be written).
    pub fn failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Takes the next bytes of output; returns the spool's length afterwards.
    pub fn push(&mut self, data: &[u8]) -> u64 {
        if self.state != State::Open {
            return self.len;
        }
        let room = usize::try_from(self.cap - self.kept).unwrap_or(usize::MAX);
        let take = data.len().min(room);
        if !self.write(&data[..take]) {
            return self.len;
        }
        self.kept += take as u64;
        if data.len() > room {
            self.state = State::Cut;
            let marker = crate::output_cap::marker(self.cap);
            if !self.write(&marker) {
                return self.len;
            }
        }
        self.len
    }

    /// Writes all of `bytes`, counting what got through; on a failure, ends the spool with the
    /// write-failed marker (as much of it as fits) and returns false.
    fn write(&mut self, bytes: &[u8]) -> bool {
        use sha2::Digest;
        let (written, error) = write_counted(&mut self.out, bytes);
        self.digest.update(&bytes[..written]);
        self.len += written as u64;
        let Some(error) = error else { return true };
        tracing::warn!(%error, spooled = self.len, "cannot write task output to the spool; the rest is dropped");
        self.state = State::Failed;
        let marker = write_failed_marker();
        let (written, _) = write_counted(&mut self.out, &marker);
        self.digest.update(&marker[..written]);
        self.len += written as u64;
        false
    }
}

/// Writes as much of `bytes` as `out` takes; returns how much that was and the error that
/// stopped it, if one did.
fn write_counted(out: &mut impl Write, bytes: &[u8]) -> (usize, Option<io::Error>) {
    let mut done = 0;
    while done < bytes.len() {
        match out.write(&bytes[done..]) {
            Ok(0) => return (done, Some(io::Error::from(io::ErrorKind::WriteZero))),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk that fills up after `room` bytes; `fail_once_at` makes one write fail there (an
    /// I/O error, or space freed right after), the next ones succeed again.
    struct Filling {
        data: Vec<u8>,
        room: usize,
        fail_once_at: Option<usize>,
    }

    impl Write for Filling {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.fail_once_at.is_some_and(|at| self.data.len() >= at) {
                self.fail_once_at = None;
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let n = buf.len().min(self.room - self.data.len());
            if n == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_cap_cuts_with_the_marker_once() {
        let mut w = SpoolWriter::new(Vec::new(), 10);
        assert!(w.is_empty());
        assert_eq!(w.push(b"0123"), 4);
        let marker = crate::output_cap::marker(10);
        assert_eq!(w.push(b"456789AB"), 10 + marker.len() as u64);
        assert_eq!(w.push(b"more, dropped"), 10 + marker.len() as u64);
        assert_eq!(&w.out[..10], b"0123456789");
        assert!(w.out.ends_with(&marker) && w.out.len() == 10 + marker.len());
        assert!(!w.failed());
    }

    /// The receipt's digest is of exactly the bytes the spool holds: cut marker, and the
    /// write-failed marker of a full disk, included.
    #[test]
    fn the_digest_covers_exactly_the_spooled_bytes() {
        use sha2::Digest;
        let sha = |b: &[u8]| -> [u8; 32] { sha2::Sha256::digest(b).into() };
        let mut w = SpoolWriter::new(Vec::new(), 10);
        assert_eq!(w.digest(), sha(b""));
        w.push(b"0123");
        assert_eq!(w.digest(), sha(b"0123"));
        w.push(b"456789AB and more");
        assert_eq!(w.digest(), sha(&w.out));
        let mut full = SpoolWriter::new(Filling { data: Vec::new(), room: 7, fail_once_at: None }, 1 << 20);
        full.push(b"0123456789");
        assert!(full.failed());
        assert_eq!(full.digest(), sha(&full.out.data));
    }

    #[test]
    fn output_ending_exactly_at_the_cap_is_not_marked() {
        let mut w = SpoolWriter::new(Vec::new(), 4);
        w.push(b"ab");
        assert_eq!(w.push(b"cd"), 4);
        assert_eq!(w.out, b"abcd");
    }

    #[test]
    fn a_full_disk_ends_the_spool_with_what_fits_and_drops_the_rest() {
        // A write fails after 100 output bytes, the marker still fits: the spool is those bytes and
        // the marker, and nothing more is written afterwards.
        let marker = write_failed_marker();
        let mut w =
            SpoolWriter::new(Filling { data: Vec::new(), room: 1 << 20, fail_once_at: Some(100) }, 1 << 20);
        for _ in 0..50 {
            w.push(b"0123456789");
        }
        assert!(w.failed());
        assert_eq!(w.len(), (100 + marker.len()) as u64);
        assert_eq!(w.out.data.len(), 100 + marker.len());
        assert!(w.out.data.ends_with(&marker), "{:?}", String::from_utf8_lossy(&w.out.data));
        // A disk with no room even for the marker: the length says what is there, nothing panics.
        let mut w = SpoolWriter::new(Filling { data: Vec::new(), room: 5, fail_once_at: None }, 1 << 20);
        assert_eq!(w.push(b"0123456789"), 5);
        assert_eq!(w.push(b"x"), 5);
        assert!(w.failed());
    }

    #[test]
    fn files_are_created_new_never_through_a_symlink_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolDir::new(dir.path().join("spool"));
        let (t, a) = (TaskId::new(1, 7), Attempt(2));
        let path = spool.path(t, a);
        let mut f = create(&path).unwrap();
        f.write_all(b"hello world").unwrap();
        assert_eq!(create(&path).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        let r = open(&path).unwrap();
        assert_eq!(read_chunk(&r, 6, 100).unwrap(), b"world");
        assert_eq!(read_chunk(&r, 0, 5).unwrap(), b"hello");
        assert!(read_chunk(&r, 50, 5).unwrap().is_empty());

        // A symlink planted where a spool goes is neither written through nor read through, and
        // reaping removes the link, not its target.
        let target = dir.path().join("precious");
        fs::write(&target, b"keep me").unwrap();
        let (t2, a2) = (TaskId::new(1, 8), Attempt(1));
        std::os::unix::fs::symlink(&target, spool.path(t2, a2)).unwrap();
        assert!(create(&spool.path(t2, a2)).is_err());
        assert!(open(&spool.path(t2, a2)).is_err());
        fs::create_dir(dir.path().join("spool/a-dir")).unwrap();
        assert_eq!(spool.reap(&[(t, a)]), 1);
        assert_eq!(fs::read(&target).unwrap(), b"keep me");
        assert!(path.exists() && dir.path().join("spool/a-dir").exists());
        spool.remove(t, a);
        spool.remove(t, a);
        assert!(!path.exists());
    }

    #[test]
    fn a_legacy_tail_lands_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        write_at(&path, 1000, b"tail").unwrap();
        let r = open(&path).unwrap();
        assert_eq!(read_chunk(&r, 1000, 64).unwrap(), b"tail");
    }
}
