//! Writing what scripts read to stdout: the listening line, a created key, a
//! received delivery. Logs go to stderr through `tracing`; this is the one other
//! way the daemon prints.

use std::io::Write as _;

/// Writes `text` to stdout in one write and flushes at once.
///
/// One write per call means concurrent callers never interleave their lines, and
/// the flush lets a pipe reader (a script, a test) see the text while the process
/// keeps running.
pub(crate) fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
