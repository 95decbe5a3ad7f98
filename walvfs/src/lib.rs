//! `otpd-walvfs`: a SQLite VFS shim under otpd's storage writer, so that the WAL
//! frames of one commit reach the file in one `pwrite` instead of two per frame.
//!
//! SQLite appends each frame of a commit to the WAL with two writes, its 24-byte
//! header and then the page. At the ~12 frames of an HTTP-sized commit that is ~24
//! system calls, and on this project's machines they cost ~21 µs a commit against
//! ~3 µs for the same bytes in one call (`docs/benchmarks-passes.md`, "Ninth pass"; the
//! `frame_writes` example measures it without SQLite). This
//! crate registers a VFS named [`VFS_NAME`] that wraps the default one and changes
//! only that: the appended parts of a WAL transaction are gathered in memory and
//! written together when the commit frame is complete.
//!
//! # Why it is safe
//! SQLite publishes a commit to other connections by writing the WAL index header
//! in shared memory; from then on readers may read its frames from the file. The
//! shim writes out what it gathered **inside the `xWrite` call of the commit frame's
//! page**, before SQLite gets to the index, and that call returns the write's error,
//! so a failed write fails the commit as a failed `pwrite` did. What can follow a
//! commit frame before the header is published (rewritten frame checksums after a
//! cache spill, padding frames under `synchronous = FULL` without power-safe
//! overwrite, a size limit) is written through at once. Every other call on the WAL
//! file (read, size, sync, truncate, lock, file control, close) first writes out
//! what is gathered, so SQLite never reads its own frames from a file that lacks
//! them. As a last guard the database file's shared-memory barrier, which comes
//! right before publishing, writes out anything still gathered
//! ([`Counters::late_flushes`] counts those; the tests assert it stays 0), and so
//! does its lock call at each transaction's start and end.
//!
//! A `kill -9` between the gathered writes and the commit frame loses only frames
//! that were never published, which SQLite's recovery ignores as it would ignore a
//! torn append.
//!
//! # The checkpointer's VFS
//! A second name, [`CHECKPOINT_VFS_NAME`] ([`register_checkpointer`]), opens files
//! through the same shim with one more change, for a connection that only
//! checkpoints: its database file is synced at the end of **every** checkpoint that
//! copied pages into it. SQLite itself syncs the database only at a checkpoint that
//! reaches the WAL's end; under a steady stream of commits none does, so every page
//! copied since the last such checkpoint waits in the page cache, and the sync that
//! finally comes (the one that lets the WAL start over) flushes them all at once.
//! Syncing after each pass spreads that work over the passes. It adds a sync and
//! takes nothing away: SQLite's own sync still comes where it always did. An early
//! sync that fails is counted, and SQLite's next sync of that file answers its
//! failure (Linux reports a failed writeback once per open file, and without the
//! early sync SQLite's own would have been the one to see it), so SQLite fails
//! that checkpoint as it would have.
//!
//! This crate and `otpd-sched` hold the workspace's only `unsafe` code; every other
//! crate forbids it.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use rusqlite::ffi;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr::{self, null, null_mut};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// The name the shim registers under, for `Connection::open_with_flags_and_vfs`.
pub const VFS_NAME: &str = "otpd-walgather";
const VFS_NAME_C: &CStr = c"otpd-walgather";
/// The name of the shim that also syncs the database file after every checkpoint
/// (see "The checkpointer's VFS" above).
pub const CHECKPOINT_VFS_NAME: &str = "otpd-walgather-checkpoint";
const CHECKPOINT_VFS_NAME_C: &CStr = c"otpd-walgather-checkpoint";

/// What is gathered is written out before it would pass this size, even
/// mid-transaction (a migration's or a cache spill's frames). An HTTP-sized commit
/// (~12 frames of 2 KiB) is a fraction of it; a large in-process batch goes down in
/// a few writes instead of hundreds.
const FLUSH_AT: usize = 64 * 1024;
/// SQLite's largest page.
const MAX_PAGE: usize = 65_536;
/// The buffer's one allocation: [`FLUSH_AT`], and room for a commit frame beyond it.
const CAPACITY: usize = FLUSH_AT + 2 * (FRAME_HEADER + MAX_PAGE);
/// The largest single write handed to the wrapped VFS. SQLite's unix VFS writes at
/// most 128 KiB − 1 bytes per call (it masks the length with `0x1ffff`), so larger
/// buffers go down in pieces.
const WRITE_PIECE: usize = 64 * 1024;
/// SQLite's WAL frame header (`WAL_FRAME_HDRSIZE`).
const FRAME_HEADER: usize = 24;
/// SQLite's WAL file header (`WAL_HDRSIZE`), written at offset 0 when a log (re)starts.
const WAL_HEADER: usize = 32;
/// The shared-memory lock slot of SQLite's WAL write lock (`WAL_WRITE_LOCK`).
const WAL_WRITE_LOCK: c_int = 0;

/// Why the shim could not be registered. The caller opens its connection with
/// the default VFS instead, which is only slower.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// `sqlite3_vfs_find(NULL)` found no default VFS.
    #[error("SQLite has no default VFS to wrap")]
    NoDefaultVfs,
    /// The default VFS predates the methods a WAL database needs.
    #[error("the default VFS {name:?} is version {version}; the shim needs version 2 or later")]
    OldVfs {
        /// The default VFS's name.
        name: String,
        /// Its `iVersion`.
        version: i32,
    },
    /// The default VFS's file objects are too large to wrap (never seen).
    #[error("the default VFS's file objects ({0} bytes) are too large to wrap")]
    FileTooLarge(i32),
    /// `sqlite3_vfs_register` failed.
    #[error("registering the VFS failed: SQLite result code {0}")]
    Register(i32),
}

/// Registers the shim once per process (later calls return the first outcome) and
/// returns its name. It is never made the default VFS: only connections opened
/// with this name use it.
///
/// # Errors
/// See [`Error`].
pub fn register() -> Result<&'static str, Error> {
    registered().map(|()| VFS_NAME)
}

/// Registers the shim once per process, as [`register`] does, and returns the name
/// of its checkpointer variant ([`CHECKPOINT_VFS_NAME`]): a connection opened with
/// it syncs its database file after every checkpoint that copied pages.
///
/// # Errors
/// See [`Error`].
pub fn register_checkpointer() -> Result<&'static str, Error> {
    registered().map(|()| CHECKPOINT_VFS_NAME)
}

fn registered() -> Result<(), Error> {
    static ONCE: OnceLock<Result<(), Error>> = OnceLock::new();
    // SAFETY: runs once (the `OnceLock`); see `register_once`.
    ONCE.get_or_init(|| unsafe { register_once() }).clone()
}

/// Process-wide counts of what the shim did, for benchmarks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// WAL writes SQLite asked for that were gathered instead of written at once.
    pub gathered: u64,
    /// Writes of gathered bytes to the file.
    pub flushes: u64,
    /// Of those, the ones made by the last guard (the database file's barrier,
    /// right before SQLite publishes a commit) rather than at the commit frame or
    /// a WAL file call. Expected 0.
    pub late_flushes: u64,
    /// Database file syncs at the end of a checkpoint by a connection of the
    /// checkpointer's VFS ([`CHECKPOINT_VFS_NAME`]).
    pub checkpoint_syncs: u64,
    /// Of those, the ones that failed (SQLite's next sync of that file answers the
    /// failure).
    pub checkpoint_sync_failures: u64,
}

impl Counters {
    /// What happened between `before` and these counts.
    pub fn since(self, before: Counters) -> Counters {
        Counters {
            gathered: self.gathered.saturating_sub(before.gathered),
            flushes: self.flushes.saturating_sub(before.flushes),
            late_flushes: self.late_flushes.saturating_sub(before.late_flushes),
            checkpoint_syncs: self
                .checkpoint_syncs
                .saturating_sub(before.checkpoint_syncs),
            checkpoint_sync_failures: self
                .checkpoint_sync_failures
                .saturating_sub(before.checkpoint_sync_failures),
        }
    }
}

static GATHERED: AtomicU64 = AtomicU64::new(0);
static FLUSHES: AtomicU64 = AtomicU64::new(0);
static LATE_FLUSHES: AtomicU64 = AtomicU64::new(0);
static CHECKPOINT_SYNCS: AtomicU64 = AtomicU64::new(0);
static CHECKPOINT_SYNC_FAILURES: AtomicU64 = AtomicU64::new(0);

/// The shim's counters since the process started.
pub fn counters() -> Counters {
    Counters {
        gathered: GATHERED.load(Ordering::Relaxed),
        flushes: FLUSHES.load(Ordering::Relaxed),
        late_flushes: LATE_FLUSHES.load(Ordering::Relaxed),
        checkpoint_syncs: CHECKPOINT_SYNCS.load(Ordering::Relaxed),
        checkpoint_sync_failures: CHECKPOINT_SYNC_FAILURES.load(Ordering::Relaxed),
    }
}

// ----- the gathering state machine (no FFI) ------------------------------------

/// Where the WAL file's writes stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Mode {
    /// Appended frames are gathered.
    #[default]
    Gather,
    /// A commit frame's header is gathered; its page at this offset completes the
    /// commit, and everything gathered is written out with it.
    CommitPage(i64),
    /// After a commit frame: writes go through at once until the next
    /// transaction's first frame (or the next log) begins.
    Through,
}

/// The gathered bytes of one WAL file and what its writes mean.
#[derive(Debug, Default)]
struct Wal {
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: i64,
    mode: Mode,
    /// The end of the last commit frame this handle wrote: within a transaction,
    /// a frame at or past it is new, one before it is being rewritten.
    tail: i64,
}

/// Writes `data` at `off` to the file below; returns a SQLite result code.
type Sink<'a> = dyn FnMut(i64, &[u8]) -> c_int + 'a;

impl Wal {
    fn contiguous(&self, off: i64) -> bool {
        self.buf.is_empty() || off == self.end()
    }

    fn end(&self) -> i64 {
        self.start + self.buf.len() as i64
    }

    fn push(&mut self, off: i64, data: &[u8]) {
        if self.buf.is_empty() {
            self.start = off;
            // Allocated once, at the first write, and never grown: the memory of a
            // WAL file is bounded by `CAPACITY`.
            if self.buf.capacity() < CAPACITY {
                self.buf.reserve_exact(CAPACITY);
            }
        }
        self.buf.extend_from_slice(data);
        GATHERED.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes out what is gathered. The buffer is emptied even when the write
    /// fails: SQLite then fails the transaction and writes its frames again.
    fn flush(&mut self, sink: &mut Sink<'_>) -> c_int {
        if self.buf.is_empty() {
            return ffi::SQLITE_OK;
        }
        let rc = sink(self.start, &self.buf);
        FLUSHES.fetch_add(1, Ordering::Relaxed);
        self.buf.clear();
        rc
    }

    /// A new write transaction begins (the connection took the WAL write lock).
    fn begin(&mut self, sink: &mut Sink<'_>) -> c_int {
        let rc = self.flush(sink);
        self.mode = Mode::Gather;
        self.tail = 0;
        rc
    }

    /// One `xWrite` of SQLite to the WAL file.
    fn write(&mut self, off: i64, data: &[u8], sink: &mut Sink<'_>) -> c_int {
        macro_rules! attempt {
            ($rc:expr) => {
                match $rc {
                    ffi::SQLITE_OK => {}
                    rc => return rc,
                }
            };
        }
        if off == 0 && data.len() == WAL_HEADER {
            // A new log: its header, then its first frames, as a new transaction.
            attempt!(self.begin(sink));
            self.push(off, data);
            return ffi::SQLITE_OK;
        }
        let header = data.len() == FRAME_HEADER;
        // A frame header's bytes 4..8 are the database size after a commit, 0 in
        // every other frame.
        let commit = header && data[4..8] != [0; 4];
        let new = off >= self.tail;
        match self.mode {
            Mode::CommitPage(page) => {
                self.mode = Mode::Through;
                if off == page && self.contiguous(off) {
                    self.push(off, data);
                    self.tail = off + data.len() as i64;
                    return self.flush(sink);
                }
                attempt!(self.flush(sink));
                sink(off, data)
            }
            _ if commit && new => {
                // Room for the header and its page stays beyond `FLUSH_AT`.
                if !self.contiguous(off) || self.buf.len() > FLUSH_AT {
                    attempt!(self.flush(sink));
                }
                self.push(off, data);
                self.mode = Mode::CommitPage(off + FRAME_HEADER as i64);
                ffi::SQLITE_OK
            }
            Mode::Through if !(header && new) => {
                attempt!(self.flush(sink));
                sink(off, data)
            }
            _ => {
                self.mode = Mode::Gather;
                if !self.contiguous(off) || self.buf.len() + data.len() > FLUSH_AT {
                    attempt!(self.flush(sink));
                    if !new || data.len() > FLUSH_AT {
                        return sink(off, data);
                    }
                }
                self.push(off, data);
                ffi::SQLITE_OK
            }
        }
    }
}

// ----- the VFS -------------------------------------------------------------------

/// The shim's file object. SQLite allocates `szOsFile` bytes for it; the wrapped
/// VFS's own file object follows at [`INNER_OFFSET`].
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// A WAL file's state (a leaked `Box`), null for every other file.
    wal: *mut WalFile,
    /// A main database file's link to its WAL file, or a WAL file's link to its
    /// database file (a leaked `Arc`); null when there is none.
    link: *const Link,
    /// A main database file's key in [`LINKS`] (its file name pointer), else 0.
    key: usize,
    /// A main database file opened through [`CHECKPOINT_VFS_NAME`]: synced at the
    /// end of every checkpoint that copied pages into it.
    sync_after_checkpoint: bool,
    /// The result code of such a sync that failed, answered by SQLite's next sync
    /// of this file instead of syncing (see [`io_sync`]); `SQLITE_OK` otherwise.
    failed_checkpoint_sync: c_int,
}

/// Where the wrapped file object starts inside the shim's (8-byte aligned, as
/// SQLite's allocations are).
const INNER_OFFSET: usize = (std::mem::size_of::<File>() + 7) & !7;

/// A WAL file's gathering state and the wrapped file it writes to.
struct WalFile {
    state: Wal,
    inner: *mut ffi::sqlite3_file,
}

impl WalFile {
    /// Runs `f` on the gathering state with a sink that writes through the
    /// wrapped file.
    ///
    /// # Safety
    /// `self.inner` is an open file of the wrapped VFS (true while `self` exists).
    unsafe fn with_sink<R>(&mut self, f: impl FnOnce(&mut Wal, &mut Sink<'_>) -> R) -> R {
        let inner = self.inner;
        // SAFETY: the caller's promise.
        let mut sink = |off, data: &[u8]| unsafe { write_below(inner, off, data) };
        f(&mut self.state, &mut sink)
    }
}

/// A database file's view of its WAL file, for the last guard.
struct Link {
    wal: AtomicPtr<WalFile>,
}

/// Open main database files by file name pointer. SQLite passes a WAL file the
/// name from which `sqlite3_filename_database` returns that same pointer.
static LINKS: Mutex<Vec<(usize, Arc<Link>)>> = Mutex::new(Vec::new());

/// # Safety
/// Called once per process (see [`register`]).
unsafe fn register_once() -> Result<(), Error> {
    // SAFETY: `sqlite3_vfs_find` takes NULL for the default VFS; the pointer it
    // returns stays valid while that VFS is registered, which SQLite's built-in
    // VFSes always are.
    let inner = unsafe { ffi::sqlite3_vfs_find(null()) };
    if inner.is_null() {
        return Err(Error::NoDefaultVfs);
    }
    // SAFETY: `inner` is a registered VFS (above).
    let (version, size, max_path, name) = unsafe {
        let v = &*inner;
        let name = if v.zName.is_null() {
            String::new()
        } else {
            CStr::from_ptr(v.zName).to_string_lossy().into_owned()
        };
        (v.iVersion, v.szOsFile, v.mxPathname, name)
    };
    if version < 2 {
        return Err(Error::OldVfs { name, version });
    }
    let size = usize::try_from(size)
        .ok()
        .and_then(|s| c_int::try_from(INNER_OFFSET + s).ok())
        .ok_or(Error::FileTooLarge(size))?;
    for name in [VFS_NAME_C, CHECKPOINT_VFS_NAME_C] {
        let vfs = Box::new(ffi::sqlite3_vfs {
            iVersion: 2,
            szOsFile: size,
            mxPathname: max_path,
            pNext: null_mut(),
            zName: name.as_ptr(),
            pAppData: inner.cast(),
            xOpen: Some(vfs_open),
            xDelete: Some(vfs_delete),
            xAccess: Some(vfs_access),
            xFullPathname: Some(vfs_full_pathname),
            xDlOpen: Some(vfs_dl_open),
            xDlError: Some(vfs_dl_error),
            xDlSym: Some(vfs_dl_sym),
            xDlClose: Some(vfs_dl_close),
            xRandomness: Some(vfs_randomness),
            xSleep: Some(vfs_sleep),
            xCurrentTime: Some(vfs_current_time),
            xGetLastError: Some(vfs_get_last_error),
            xCurrentTimeInt64: Some(vfs_current_time_int64),
            xSetSystemCall: None,
            xGetSystemCall: None,
            xNextSystemCall: None,
        });
        // SAFETY: the VFS object is leaked, so it lives as long as the registration
        // (for the rest of the process); its name is a static C string.
        let rc = unsafe { ffi::sqlite3_vfs_register(Box::into_raw(vfs), 0) };
        if rc != ffi::SQLITE_OK {
            return Err(Error::Register(rc));
        }
    }
    Ok(())
}

/// The wrapped VFS.
///
/// # Safety
/// `vfs` is the shim's VFS object.
unsafe fn below(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: the caller's promise; `pAppData` was set to the wrapped VFS.
    unsafe { (*vfs).pAppData.cast() }
}

/// Forwards a VFS method to the wrapped VFS, or answers `$missing` when it has none.
macro_rules! forward_vfs {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, $missing:expr) => {
        unsafe extern "C" fn $name(vfs: *mut ffi::sqlite3_vfs, $($arg: $ty),*) -> $ret {
            // SAFETY: SQLite calls this with the shim's VFS object, and the
            // arguments it gave are passed on unchanged to the wrapped VFS.
            unsafe {
                let inner = below(vfs);
                match (*inner).$field {
                    Some(f) => f(inner, $($arg),*),
                    None => $missing,
                }
            }
        }
    };
}

forward_vfs!(vfs_delete, xDelete, (name: *const c_char, sync_dir: c_int) -> c_int, ffi::SQLITE_IOERR_DELETE);
forward_vfs!(vfs_access, xAccess, (name: *const c_char, flags: c_int, out: *mut c_int) -> c_int, ffi::SQLITE_IOERR_ACCESS);
forward_vfs!(vfs_full_pathname, xFullPathname, (name: *const c_char, n: c_int, out: *mut c_char) -> c_int, ffi::SQLITE_CANTOPEN);
forward_vfs!(vfs_dl_open, xDlOpen, (name: *const c_char) -> *mut c_void, null_mut());
forward_vfs!(vfs_dl_error, xDlError, (n: c_int, out: *mut c_char) -> (), ());
forward_vfs!(vfs_dl_sym, xDlSym, (handle: *mut c_void, symbol: *const c_char) -> Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)>, None);
forward_vfs!(vfs_dl_close, xDlClose, (handle: *mut c_void) -> (), ());
forward_vfs!(vfs_randomness, xRandomness, (n: c_int, out: *mut c_char) -> c_int, 0);
forward_vfs!(vfs_sleep, xSleep, (micros: c_int) -> c_int, 0);
forward_vfs!(vfs_current_time, xCurrentTime, (out: *mut f64) -> c_int, ffi::SQLITE_ERROR);
forward_vfs!(vfs_get_last_error, xGetLastError, (n: c_int, out: *mut c_char) -> c_int, 0);
forward_vfs!(vfs_current_time_int64, xCurrentTimeInt64, (out: *mut ffi::sqlite3_int64) -> c_int, ffi::SQLITE_ERROR);

fn links() -> std::sync::MutexGuard<'static, Vec<(usize, Arc<Link>)>> {
    LINKS.lock().unwrap_or_else(PoisonError::into_inner)
}

unsafe extern "C" fn vfs_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite gives `file` `szOsFile` bytes, 8-byte aligned: room for a
    // `File` and then the wrapped VFS's file object at `INNER_OFFSET`. `name` is
    // NULL or a file name SQLite keeps alive until the file is closed.
    unsafe {
        let inner_vfs = below(vfs);
        let this = file.cast::<File>();
        let inner = file
            .cast::<u8>()
            .add(INNER_OFFSET)
            .cast::<ffi::sqlite3_file>();
        ptr::write(
            this,
            File {
                base: ffi::sqlite3_file { pMethods: null() },
                inner,
                wal: null_mut(),
                link: null(),
                key: 0,
                sync_after_checkpoint: false,
                failed_checkpoint_sync: ffi::SQLITE_OK,
            },
        );
        let Some(open) = (*inner_vfs).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        let rc = open(inner_vfs, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK || (*inner).pMethods.is_null() {
            // `pMethods` stays NULL, so SQLite will not call `xClose`.
            return if rc == ffi::SQLITE_OK {
                ffi::SQLITE_CANTOPEN
            } else {
                rc
            };
        }
        if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 && !name.is_null() {
            let link = Arc::new(Link {
                wal: AtomicPtr::new(null_mut()),
            });
            links().push((name as usize, link.clone()));
            (*this).link = Arc::into_raw(link);
            (*this).key = name as usize;
            (*this).sync_after_checkpoint = (*vfs).zName == CHECKPOINT_VFS_NAME_C.as_ptr();
        } else if flags & ffi::SQLITE_OPEN_WAL != 0 {
            let wal = Box::into_raw(Box::new(WalFile {
                state: Wal::default(),
                inner,
            }));
            (*this).wal = wal;
            let db = if name.is_null() {
                0
            } else {
                ffi::sqlite3_filename_database(name) as usize
            };
            let link = links()
                .iter()
                .find(|(key, _)| *key == db && db != 0)
                .map(|(_, link)| link.clone());
            if let Some(link) = link {
                link.wal.store(wal, Ordering::Release);
                (*this).link = Arc::into_raw(link);
            }
        }
        (*this).base.pMethods = &IO_METHODS;
        ffi::SQLITE_OK
    }
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(io_close),
    xRead: Some(io_read),
    xWrite: Some(io_write),
    xTruncate: Some(io_truncate),
    xSync: Some(io_sync),
    xFileSize: Some(io_file_size),
    xLock: Some(io_lock),
    xUnlock: Some(io_unlock),
    xCheckReservedLock: Some(io_check_reserved_lock),
    xFileControl: Some(io_file_control),
    xSectorSize: Some(io_sector_size),
    xDeviceCharacteristics: Some(io_device_characteristics),
    xShmMap: Some(io_shm_map),
    xShmLock: Some(io_shm_lock),
    xShmBarrier: Some(io_shm_barrier),
    xShmUnmap: Some(io_shm_unmap),
    xFetch: Some(io_fetch),
    xUnfetch: Some(io_unfetch),
};

/// The wrapped file's method `$field`.
macro_rules! method {
    ($inner:expr, $field:ident) => {
        (*(*$inner).pMethods).$field
    };
}

/// Writes `data` at `off` through the wrapped file, in pieces of at most
/// [`WRITE_PIECE`] bytes.
///
/// # Safety
/// `inner` is an open file of the wrapped VFS.
unsafe fn write_below(inner: *mut ffi::sqlite3_file, off: i64, data: &[u8]) -> c_int {
    let mut at = off;
    for piece in data.chunks(WRITE_PIECE) {
        // SAFETY: the caller's promise; `piece` is valid for its length, which
        // fits a `c_int` (at most `WRITE_PIECE`).
        let rc = unsafe {
            match method!(inner, xWrite) {
                Some(write) => write(inner, piece.as_ptr().cast(), piece.len() as c_int, at),
                None => ffi::SQLITE_IOERR_WRITE,
            }
        };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        at += piece.len() as i64;
    }
    ffi::SQLITE_OK
}

/// Syncs the wrapped file with SQLite's `flags`.
///
/// # Safety
/// `inner` is an open file of the wrapped VFS.
unsafe fn sync_below(inner: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: the caller's promise.
    unsafe {
        match method!(inner, xSync) {
            Some(sync) => sync(inner, flags),
            None => ffi::SQLITE_IOERR_FSYNC,
        }
    }
}

/// Writes out what a WAL file has gathered (nothing for other files).
///
/// # Safety
/// `this` is an open file of the shim.
unsafe fn flush(this: *mut File) -> c_int {
    // SAFETY: the caller's promise; `wal` is null or this file's own state.
    unsafe {
        let wal = (*this).wal;
        if wal.is_null() {
            return ffi::SQLITE_OK;
        }
        (*wal).with_sink(Wal::flush)
    }
}

/// Before a database file's barrier or shared-memory lock call, writes out what
/// its WAL file still holds. Returns the WAL file's state (null if it has none
/// open) and the write's result.
///
/// At a barrier (`publishing`: SQLite is about to publish a commit) the rules of
/// [`Wal::write`] leave nothing gathered; this is the last guard, and a write here
/// counts in [`Counters::late_flushes`]. At a lock call it can find the frames a
/// rolled-back transaction spilled, which are never published, and writes them out
/// as any other call would.
///
/// # Safety
/// `this` is an open file of the shim.
unsafe fn guard(this: *mut File, publishing: bool) -> (*mut WalFile, c_int) {
    // SAFETY: the caller's promise. A database file's link points at its WAL
    // file's state while that file is open (`io_close` clears it first); both files
    // belong to one connection, which SQLite uses from one thread at a time.
    unsafe {
        let link = (*this).link;
        if link.is_null() || !(*this).wal.is_null() {
            return (null_mut(), ffi::SQLITE_OK);
        }
        let wal = (*link).wal.load(Ordering::Acquire);
        if wal.is_null() || (*wal).state.buf.is_empty() {
            return (wal, ffi::SQLITE_OK);
        }
        if publishing {
            LATE_FLUSHES.fetch_add(1, Ordering::Relaxed);
        }
        (wal, (*wal).with_sink(Wal::flush))
    }
}

unsafe extern "C" fn io_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes each file it opened once; after this it frees the memory.
    unsafe {
        let this = file.cast::<File>();
        let flushed = flush(this);
        if !(*this).wal.is_null() {
            if !(*this).link.is_null() {
                (*(*this).link).wal.store(null_mut(), Ordering::Release);
            }
            drop(Box::from_raw((*this).wal));
            (*this).wal = null_mut();
        }
        if (*this).key != 0 {
            let key = (*this).key;
            links().retain(|(k, _)| *k != key);
        }
        if !(*this).link.is_null() {
            drop(Arc::from_raw((*this).link));
            (*this).link = null();
        }
        let inner = (*this).inner;
        let closed = match method!(inner, xClose) {
            Some(close) => close(inner),
            None => ffi::SQLITE_OK,
        };
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

/// The shim's file behind `file`, after writing out what it has gathered if it is a
/// WAL file; a failed write is the error, which the calling method returns.
///
/// # Safety
/// `file` is an open file of the shim.
unsafe fn flushed(file: *mut ffi::sqlite3_file) -> Result<*mut File, c_int> {
    let this = file.cast::<File>();
    // SAFETY: the caller's promise.
    match unsafe { flush(this) } {
        ffi::SQLITE_OK => Ok(this),
        rc => Err(rc),
    }
}

/// Forwards a file method to the wrapped file, first writing out what a WAL file
/// has gathered (a failed write is the call's result), or answers `$missing` when
/// the wrapped file has no such method.
macro_rules! forward_io {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*), $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> c_int {
            // SAFETY: SQLite calls file methods only on files the shim opened, and
            // the arguments it gave are passed on unchanged to the wrapped file.
            unsafe {
                let this = match flushed(file) {
                    Ok(this) => this,
                    Err(rc) => return rc,
                };
                let inner = (*this).inner;
                match method!(inner, $field) {
                    Some(f) => f(inner, $($arg),*),
                    None => $missing,
                }
            }
        }
    };
}

forward_io!(io_read, xRead, (buf: *mut c_void, amount: c_int, off: ffi::sqlite3_int64), ffi::SQLITE_IOERR_READ);
forward_io!(io_truncate, xTruncate, (size: ffi::sqlite3_int64), ffi::SQLITE_IOERR_TRUNCATE);
forward_io!(io_file_size, xFileSize, (size: *mut ffi::sqlite3_int64), ffi::SQLITE_IOERR_FSTAT);
forward_io!(io_lock, xLock, (level: c_int), ffi::SQLITE_IOERR_LOCK);
forward_io!(io_unlock, xUnlock, (level: c_int), ffi::SQLITE_IOERR_UNLOCK);
forward_io!(io_check_reserved_lock, xCheckReservedLock, (out: *mut c_int), ffi::SQLITE_IOERR_CHECKRESERVEDLOCK);
forward_io!(io_shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void), ffi::SQLITE_IOERR_SHMMAP);
forward_io!(io_shm_unmap, xShmUnmap, (delete: c_int), ffi::SQLITE_OK);
forward_io!(io_fetch, xFetch, (off: ffi::sqlite3_int64, amount: c_int, out: *mut *mut c_void), {
    *out = null_mut();
    ffi::SQLITE_OK
});
forward_io!(io_unfetch, xUnfetch, (off: ffi::sqlite3_int64, page: *mut c_void), ffi::SQLITE_OK);

unsafe extern "C" fn io_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite passes a file the shim opened and `amount` readable bytes.
    unsafe {
        let this = file.cast::<File>();
        let inner = (*this).inner;
        let data = match usize::try_from(amount) {
            Ok(len) if !buf.is_null() => std::slice::from_raw_parts(buf.cast::<u8>(), len),
            _ => return ffi::SQLITE_IOERR_WRITE,
        };
        let wal = (*this).wal;
        if wal.is_null() {
            return write_below(inner, off, data);
        }
        (*wal).with_sink(|wal, sink| wal.write(off, data, sink))
    }
}

/// A sync of a file: forwarded, except that after an early checkpoint sync failed
/// on this file, the next one answers that failure instead.
///
/// Linux reports a failed writeback once per open file, to the first sync that
/// follows it. Without the early sync that first sync would have been SQLite's
/// own, which then fails the checkpoint instead of letting the WAL start over; so
/// the failure the early sync took is handed on to it.
unsafe extern "C" fn io_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: SQLite calls file methods only on files the shim opened, and the
    // arguments it gave are passed on unchanged to the wrapped file.
    unsafe {
        let this = match flushed(file) {
            Ok(this) => this,
            Err(rc) => return rc,
        };
        let failed = std::mem::replace(&mut (*this).failed_checkpoint_sync, ffi::SQLITE_OK);
        if failed != ffi::SQLITE_OK {
            return failed;
        }
        sync_below((*this).inner, flags)
    }
}

unsafe extern "C" fn io_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls file methods only on files the shim opened, and the
    // arguments it gave are passed on unchanged to the wrapped file.
    unsafe {
        let this = match flushed(file) {
            Ok(this) => this,
            Err(rc) => return rc,
        };
        let inner = (*this).inner;
        if op == ffi::SQLITE_FCNTL_CKPT_DONE && (*this).sync_after_checkpoint {
            // The pages this checkpoint copied, synced now rather than all together
            // at the checkpoint that reaches the WAL's end (module docs).
            let synced = sync_below(inner, ffi::SQLITE_SYNC_NORMAL);
            CHECKPOINT_SYNCS.fetch_add(1, Ordering::Relaxed);
            if synced != ffi::SQLITE_OK {
                CHECKPOINT_SYNC_FAILURES.fetch_add(1, Ordering::Relaxed);
                (*this).failed_checkpoint_sync = synced;
            }
        }
        match method!(inner, xFileControl) {
            Some(f) => f(inner, op, arg),
            None => ffi::SQLITE_NOTFOUND,
        }
    }
}

unsafe extern "C" fn io_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as for every file method; a pure query, nothing to write out first.
    unsafe {
        let inner = (*file.cast::<File>()).inner;
        method!(inner, xSectorSize).map_or(4096, |f| f(inner))
    }
}

unsafe extern "C" fn io_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as for every file method; a pure query, nothing to write out first.
    unsafe {
        let inner = (*file.cast::<File>()).inner;
        method!(inner, xDeviceCharacteristics).map_or(0, |f| f(inner))
    }
}

unsafe extern "C" fn io_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: SQLite calls this on a database file the shim opened.
    unsafe {
        let this = file.cast::<File>();
        let (wal, rc) = guard(this, false);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let inner = (*this).inner;
        let rc = match method!(inner, xShmLock) {
            Some(f) => f(inner, offset, n, flags),
            None => ffi::SQLITE_IOERR_SHMLOCK,
        };
        let takes_write_lock = offset == WAL_WRITE_LOCK
            && n == 1
            && flags == ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_EXCLUSIVE;
        if rc == ffi::SQLITE_OK && takes_write_lock && !wal.is_null() {
            return (*wal).with_sink(Wal::begin);
        }
        rc
    }
}

unsafe extern "C" fn io_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite calls this on a database file the shim opened.
    unsafe {
        let this = file.cast::<File>();
        let (_, rc) = guard(this, true);
        if rc != ffi::SQLITE_OK {
            // SQLite is about to publish a commit whose frames could not be
            // written, and this call cannot fail: stop the process rather than let
            // readers see a commit that is not in the file. It leaves the database
            // as a `kill -9` would, which recovery handles.
            eprintln!(
                "otpd-walvfs: writing WAL frames before a commit failed (SQLite result code {rc}); aborting"
            );
            std::process::abort();
        }
        let inner = (*this).inner;
        if let Some(f) = method!(inner, xShmBarrier) {
            f(inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file image and the writes that reached it.
    #[derive(Default)]
    struct Disk {
        bytes: Vec<u8>,
        writes: Vec<(i64, usize)>,
    }

    impl Disk {
        fn apply(&mut self, off: i64, data: &[u8]) -> c_int {
            let off = usize::try_from(off).expect("offsets are small");
            if self.bytes.len() < off + data.len() {
                self.bytes.resize(off + data.len(), 0);
            }
            self.bytes[off..off + data.len()].copy_from_slice(data);
            self.writes.push((off as i64, data.len()));
            ffi::SQLITE_OK
        }
    }

    const PAGE: usize = 512;

    fn frame_header(fill: u8, commit: bool) -> Vec<u8> {
        let mut h = vec![fill; FRAME_HEADER];
        h[4..8].copy_from_slice(&(if commit { 7u32 } else { 0 }).to_be_bytes());
        h
    }

    fn frame_offset(frame: i64) -> i64 {
        WAL_HEADER as i64 + (frame - 1) * (FRAME_HEADER + PAGE) as i64
    }

    /// Replays SQLite-shaped writes through the shim and straight to a second disk.
    struct Replay {
        wal: Wal,
        gathered: Disk,
        direct: Disk,
    }

    impl Replay {
        fn new() -> Replay {
            Replay {
                wal: Wal::default(),
                gathered: Disk::default(),
                direct: Disk::default(),
            }
        }

        fn write(&mut self, off: i64, data: &[u8]) {
            let disk = &mut self.gathered;
            assert_eq!(
                self.wal.write(off, data, &mut |o, d| disk.apply(o, d)),
                ffi::SQLITE_OK
            );
            self.direct.apply(off, data);
        }

        fn frame(&mut self, frame: i64, fill: u8, commit: bool) {
            let off = frame_offset(frame);
            self.write(off, &frame_header(fill, commit));
            self.write(off + FRAME_HEADER as i64, &[fill; PAGE]);
        }

        /// After a commit frame nothing may wait in memory: the image is complete.
        fn assert_published(&self) {
            assert!(self.wal.buf.is_empty(), "bytes still gathered at a commit");
            assert_eq!(self.gathered.bytes, self.direct.bytes);
        }
    }

    #[test]
    fn a_commit_reaches_the_file_in_one_write_when_its_commit_frame_is_complete() {
        let mut r = Replay::new();
        r.wal.begin(&mut |_, _| unreachable!());
        r.write(0, &[9; WAL_HEADER]);
        r.frame(1, 1, false);
        r.frame(2, 2, false);
        assert!(
            r.gathered.writes.is_empty(),
            "nothing written before the commit"
        );
        r.frame(3, 3, true);
        r.assert_published();
        assert_eq!(r.gathered.writes, vec![(0, frame_offset(4) as usize)]);

        // The next transaction appends after it, again as one write.
        r.wal.begin(&mut |_, _| unreachable!());
        r.frame(4, 4, false);
        r.frame(5, 5, true);
        r.assert_published();
        assert_eq!(
            r.gathered.writes[1],
            (frame_offset(4), 2 * (FRAME_HEADER + PAGE))
        );
        assert_eq!(r.direct.writes.len(), 1 + 2 * 5);
    }

    #[test]
    fn a_single_frame_commit_right_after_another_is_gathered_too() {
        let mut r = Replay::new();
        r.write(0, &[9; WAL_HEADER]);
        r.frame(1, 1, true);
        r.assert_published();
        // No write-lock call in between (the shim may not be linked): the next
        // commit frame is new because it lies past the last commit.
        r.frame(2, 2, true);
        r.assert_published();
        assert_eq!(r.gathered.writes.len(), 2);
    }

    #[test]
    fn rewrites_after_a_spill_and_checksum_rewrites_keep_the_file_exact() {
        let mut r = Replay::new();
        r.write(0, &[9; WAL_HEADER]);
        r.frame(1, 1, true);
        // A transaction spills frames 2..=4, then rewrites frame 3's page in place,
        // then commits with frame 5 and rewrites the checksums of frames 3..=5.
        r.wal.begin(&mut |_, _| unreachable!());
        r.frame(2, 2, false);
        r.frame(3, 3, false);
        r.frame(4, 4, false);
        r.write(frame_offset(3) + FRAME_HEADER as i64, &[33; PAGE]);
        r.frame(5, 5, true);
        r.assert_published();
        for frame in 3..=5 {
            r.write(
                frame_offset(frame),
                &frame_header(50 + frame as u8, frame == 5),
            );
            r.assert_published();
        }
        // Padding copies of the commit frame (synchronous = FULL without power-safe
        // overwrite) are new frames and leave nothing behind either.
        r.frame(6, 5, true);
        r.assert_published();
    }

    #[test]
    fn a_rolled_back_spill_is_overwritten_in_order() {
        let mut r = Replay::new();
        r.write(0, &[9; WAL_HEADER]);
        r.frame(1, 1, true);
        r.wal.begin(&mut |_, _| unreachable!());
        for frame in 2..=6 {
            r.frame(frame, frame as u8, false);
        }
        // Rolled back: the next transaction writes from frame 2 again.
        r.wal.begin(&mut |o, d| r.gathered.apply(o, d));
        assert_eq!(r.gathered.bytes, r.direct.bytes);
        r.frame(2, 20, false);
        r.frame(3, 30, true);
        r.assert_published();
    }

    #[test]
    fn a_new_log_starts_over_at_offset_zero() {
        let mut r = Replay::new();
        r.write(0, &[9; WAL_HEADER]);
        r.frame(1, 1, false);
        r.frame(2, 2, true);
        r.write(0, &[8; WAL_HEADER]);
        r.frame(1, 3, true);
        r.assert_published();
        assert_eq!(r.gathered.writes.len(), 2);
    }

    #[test]
    fn a_large_transaction_is_written_out_in_bounded_pieces() {
        let mut r = Replay::new();
        r.write(0, &[9; WAL_HEADER]);
        let frames = (3 * FLUSH_AT / (FRAME_HEADER + PAGE)) as i64;
        for frame in 1..frames {
            r.frame(frame, frame as u8, false);
            assert!(r.wal.buf.len() <= FLUSH_AT);
            assert_eq!(r.wal.buf.capacity(), CAPACITY, "never grown");
        }
        r.frame(frames, 1, true);
        r.assert_published();
        assert!(r.gathered.writes.len() >= 3);
    }

    #[test]
    fn a_failed_write_is_the_commit_frames_result_and_leaves_nothing_gathered() {
        let mut wal = Wal::default();
        let mut ok = |_: i64, _: &[u8]| ffi::SQLITE_OK;
        assert_eq!(wal.write(0, &[9; WAL_HEADER], &mut ok), ffi::SQLITE_OK);
        let header = frame_header(1, true);
        assert_eq!(wal.write(32, &header, &mut ok), ffi::SQLITE_OK);
        let mut full = |_: i64, _: &[u8]| ffi::SQLITE_FULL;
        assert_eq!(wal.write(56, &[1; PAGE], &mut full), ffi::SQLITE_FULL);
        assert!(wal.buf.is_empty());
    }

    // ----- the checkpointer's sync, against a wrapped file that fails on demand --

    static FAKE_SYNCS: AtomicU64 = AtomicU64::new(0);
    /// The wrapped file's sync fails while this is set.
    static FAKE_SYNC_FAILS: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);

    unsafe extern "C" fn fake_sync(_: *mut ffi::sqlite3_file, _: c_int) -> c_int {
        FAKE_SYNCS.fetch_add(1, Ordering::Relaxed);
        if FAKE_SYNC_FAILS.load(Ordering::Relaxed) {
            ffi::SQLITE_IOERR_FSYNC
        } else {
            ffi::SQLITE_OK
        }
    }

    unsafe extern "C" fn fake_file_control(
        _: *mut ffi::sqlite3_file,
        _: c_int,
        _: *mut c_void,
    ) -> c_int {
        ffi::SQLITE_NOTFOUND
    }

    static FAKE_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
        iVersion: 1,
        xClose: None,
        xRead: None,
        xWrite: None,
        xTruncate: None,
        xSync: Some(fake_sync),
        xFileSize: None,
        xLock: None,
        xUnlock: None,
        xCheckReservedLock: None,
        xFileControl: Some(fake_file_control),
        xSectorSize: None,
        xDeviceCharacteristics: None,
        xShmMap: None,
        xShmLock: None,
        xShmBarrier: None,
        xShmUnmap: None,
        xFetch: None,
        xUnfetch: None,
    };

    #[test]
    fn a_failed_checkpoint_sync_is_the_answer_of_sqlites_next_sync() {
        let mut inner = ffi::sqlite3_file {
            pMethods: &FAKE_METHODS,
        };
        let mut file = File {
            base: ffi::sqlite3_file {
                pMethods: &IO_METHODS,
            },
            inner: &mut inner,
            wal: null_mut(),
            link: null(),
            key: 0,
            sync_after_checkpoint: true,
            failed_checkpoint_sync: ffi::SQLITE_OK,
        };
        let this = (&mut file as *mut File).cast::<ffi::sqlite3_file>();
        let done = ffi::SQLITE_FCNTL_CKPT_DONE;
        // SAFETY: `this` is a shim file whose wrapped file has the methods called.
        unsafe {
            // A pass's end syncs the wrapped file once.
            assert_eq!(
                io_file_control(this, done, null_mut()),
                ffi::SQLITE_NOTFOUND
            );
            assert_eq!(FAKE_SYNCS.load(Ordering::Relaxed), 1);
            assert_eq!(io_sync(this, ffi::SQLITE_SYNC_NORMAL), ffi::SQLITE_OK);
            assert_eq!(FAKE_SYNCS.load(Ordering::Relaxed), 2);

            // The early sync fails: SQLite's next sync answers that failure (it
            // would have been the one to see it), once; the one after syncs again.
            FAKE_SYNC_FAILS.store(true, Ordering::Relaxed);
            io_file_control(this, done, null_mut());
            FAKE_SYNC_FAILS.store(false, Ordering::Relaxed);
            assert_eq!(
                io_sync(this, ffi::SQLITE_SYNC_NORMAL),
                ffi::SQLITE_IOERR_FSYNC
            );
            assert_eq!(
                FAKE_SYNCS.load(Ordering::Relaxed),
                3,
                "answered, not synced"
            );
            assert_eq!(io_sync(this, ffi::SQLITE_SYNC_NORMAL), ffi::SQLITE_OK);
            assert_eq!(FAKE_SYNCS.load(Ordering::Relaxed), 4);

            // Other file controls, and files of the writer's name, sync nothing.
            io_file_control(this, ffi::SQLITE_FCNTL_CKPT_START, null_mut());
            file.sync_after_checkpoint = false;
            let this = (&mut file as *mut File).cast::<ffi::sqlite3_file>();
            io_file_control(this, done, null_mut());
            assert_eq!(FAKE_SYNCS.load(Ordering::Relaxed), 4);
        }
        assert_eq!(counters().checkpoint_syncs, 2);
        assert_eq!(counters().checkpoint_sync_failures, 1);
    }
}
