//! `otpd backup --to FILE`: an online, consistent copy of the live database.
//!
//! The source is opened **read-only** (no checkpoint, no write to the database or
//! its WAL; SQLite only updates the shared-memory index every WAL reader uses), and
//! the copy is made with SQLite's online backup API in a single step, i.e. inside
//! one read transaction. In WAL mode a reader never blocks the daemon's writer, so
//! the copy is the database exactly as it was committed when the step began, while
//! the daemon keeps serving and committing.
//!
//! The copy is a self-contained rollback-journal database (no `-wal` beside it),
//! created `0600`, checked with `PRAGMA quick_check` and fsynced before the command
//! reports success. An existing `FILE` is refused unless `force` is set; with
//! `force` the copy is written next to it and renamed over it only once complete.

use std::path::{Path, PathBuf};
use std::time::Duration;

use otpd_actors::clock::Stopwatch;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

/// How long to keep retrying while the source is busy or locked.
const BUSY_PATIENCE: Duration = Duration::from_secs(30);

/// What to copy where.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The live database (`storage.path`).
    pub source: PathBuf,
    /// The file to create.
    pub to: PathBuf,
    /// Replace `to` when it exists (atomically, once the copy is complete).
    pub force: bool,
}

/// What a finished backup reports (printed as one JSON line).
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    /// The database that was copied.
    pub source: PathBuf,
    /// The copy.
    pub backup: PathBuf,
    /// Database pages copied.
    pub pages: i64,
    /// Size of the copy in bytes.
    pub bytes: u64,
    /// Wall time of the copy, check and sync.
    pub seconds: f64,
    /// `PRAGMA quick_check` of the copy (`"ok"`).
    pub check: String,
}

/// Why a backup failed. A partial copy is always removed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// There is no database at the configured path.
    #[error("no database at {0} (check storage.path)")]
    NoSource(PathBuf),
    /// The target exists and `--force` was not given.
    #[error("{0} already exists; choose another file or pass --force")]
    Exists(PathBuf),
    /// The target is the live database itself.
    #[error("refusing to back up {0} onto itself")]
    SameFile(PathBuf),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The source stayed busy for too long.
    #[error("the database stayed locked for {0:?}; try again")]
    Busy(Duration),
    /// The copy failed its integrity check.
    #[error("the copy failed its integrity check: {0}")]
    Check(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies `options.source` to `options.to`; see the module docs.
pub fn run(options: &BackupOptions) -> Result<BackupSummary, BackupError> {
    let started = Stopwatch::start();
    let source = &options.source;
    if !source.is_file() {
        return Err(BackupError::NoSource(source.clone()));
    }
    if let (Ok(a), Ok(b)) = (source.canonicalize(), options.to.canonicalize()) {
        if a == b {
            return Err(BackupError::SameFile(a));
        }
    }
    if !options.force && options.to.exists() {
        return Err(BackupError::Exists(options.to.clone()));
    }
    // With --force, build the copy beside the target and rename it over at the end.
    let target = if options.force {
        otpd_actors::private_files::with_suffix(
            &options.to,
            &format!(".partial-{}", std::process::id()),
        )
    } else {
        options.to.clone()
    };
    create_private_file(&target).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => BackupError::Exists(target.clone()),
        _ => io(&target)(e),
    })?;
    let copied = copy(source, &target);
    let (pages, check) = match copied {
        Ok(done) => done,
        Err(e) => {
            remove_partial(&target);
            return Err(e);
        }
    };
    if options.force {
        if let Err(e) = std::fs::rename(&target, &options.to) {
            remove_partial(&target);
            return Err(io(&options.to)(e));
        }
    }
    sync_parent(&options.to);
    let bytes = std::fs::metadata(&options.to)
        .map_err(io(&options.to))?
        .len();
    Ok(BackupSummary {
        source: source.clone(),
        backup: options.to.clone(),
        pages,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        check,
    })
}

/// The copy itself: backup in one step, journal mode DELETE, quick check, fsync.
fn copy(source: &Path, target: &Path) -> Result<(i64, String), BackupError> {
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(Duration::from_secs(5))?;
    let mut dst = Connection::open(target)?;
    let pages = {
        let backup = Backup::new(&src, &mut dst)?;
        let waiting = Stopwatch::start();
        loop {
            // -1: every page in one step, so one read transaction, one snapshot.
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More | StepResult::Busy | StepResult::Locked => {
                    if waiting.elapsed() > BUSY_PATIENCE {
                        return Err(BackupError::Busy(BUSY_PATIENCE));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                // StepResult is non-exhaustive; treat anything new as "try again".
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        backup.progress().pagecount as i64
    };
    drop(src);
    // A self-contained file: no -wal needed beside the copy.
    let _mode: String = dst.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
    let check: String = dst.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    dst.close().map_err(|(_, e)| BackupError::Sqlite(e))?;
    if check != "ok" {
        return Err(BackupError::Check(check));
    }
    std::fs::File::open(target)
        .and_then(|f| f.sync_all())
        .map_err(io(target))?;
    Ok((pages, check))
}

/// Creates `path` empty with mode 0600 (an empty file is a valid empty database);
/// fails when it exists, so nothing is ever overwritten here.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    open.open(path)?;
    otpd_actors::private_files::restrict_db_files(path)
}

/// Removes a partial copy (and any journal SQLite left beside it).
fn remove_partial(path: &Path) {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let _ = std::fs::remove_file(otpd_actors::private_files::with_suffix(path, suffix));
    }
}

/// Best effort: makes the new directory entry durable.
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}
