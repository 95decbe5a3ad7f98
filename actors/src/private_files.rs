//! Owner-only permissions for what otpd keeps on disk (Unix).
//!
//! The database holds hashed codes, API-key hashes, webhook secrets and the
//! generated code pepper, so the data directory otpd creates is `0700` and the
//! database file and its `-wal`/`-shm` companions are `0600`, whatever the umask.
//! A directory that already exists is left as the operator made it (it may be the
//! working directory or a shared `/var/lib`). On other platforms these are no-ops.

use std::path::{Path, PathBuf};

/// Creates `dir` (and missing parents) owner-only (`0700`) when it does not exist.
/// Directories that already exist keep their mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        // Parents first, so every directory created here is chmod-ed, not only the last.
        let mut missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .collect();
        missing.reverse();
        for d in missing {
            match std::fs::DirBuilder::new().mode(0o700).create(d) {
                Ok(()) => {
                    // mkdir's mode is filtered by the umask; set it explicitly.
                    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Makes sure the database file exists and is `0600` before SQLite opens it
/// (SQLite gives its `-wal`, `-shm` and journal files the database file's mode).
pub fn prepare_db_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        restrict(path)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Sets `0600` on the database file and on whichever of its `-wal` and `-shm`
/// files exist (an earlier otpd, or another tool, may have made them wider).
pub fn restrict_db_files(path: &Path) -> std::io::Result<()> {
    restrict(path)?;
    for suffix in ["-wal", "-shm"] {
        let companion = with_suffix(path, suffix);
        if companion.exists() {
            restrict(&companion)?;
        }
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name (`otpd.db` → `otpd.db-wal`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// `chmod 0600`, when the mode is anything else.
fn restrict(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode != 0o600 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn created_dirs_are_0700_and_existing_ones_are_left_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let deep = tmp.path().join("a/b");
        create_private_dir(&deep).expect("create");
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&deep), 0o700);
        assert_eq!(mode(tmp.path()), 0o755);
    }

    #[test]
    fn db_file_and_companions_become_0600() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = tmp.path().join("x.db");
        prepare_db_file(&db).expect("prepare");
        assert_eq!(mode(&db), 0o600);
        let wal = with_suffix(&db, "-wal");
        std::fs::write(&wal, b"").expect("wal");
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o664)).expect("chmod");
        restrict_db_files(&db).expect("restrict");
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&wal), 0o600);
    }
}
