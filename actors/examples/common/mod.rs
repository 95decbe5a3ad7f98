//! What the storage examples share: a SQLite file opened as otpd's writer opens it.

use rusqlite::Connection;

/// Opens (creating) `path` with the writer's settings that shape a commit's cost:
/// 2 KiB pages (`NEW_FILE_PAGE_SIZE`), WAL, `synchronous = NORMAL` (the default
/// `storage.synchronous`) and its 8 MiB page cache (`WRITER_CACHE_KIB`).
pub fn open_like_the_writer(path: &std::path::Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    conn.pragma_update(None, "page_size", 2048)
        .expect("page_size");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("sync");
    conn.pragma_update(None, "cache_size", -8192)
        .expect("cache");
    conn
}
