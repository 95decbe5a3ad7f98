//! What the shim saves, without SQLite: a commit's WAL frames written as SQLite's
//! unix VFS writes them (a 24-byte header, then a page: two `pwrite`s per frame)
//! against the same bytes in one `pwrite`.
//!
//! `cargo run --release -p otpd-walvfs --example frame_writes -- [FRAMES] [PAGE] [DIR]`
//! (defaults: 12 frames, the 2,048-byte pages of otpd's new files, the temporary
//! directory). Prints µs per commit for each way, 3 runs of 20,000 commits each.

#![allow(clippy::disallowed_methods)] // a benchmark measures real time

use std::os::unix::fs::FileExt;
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let frames: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(12);
    let page: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2048);
    let dir = args.next().map_or_else(std::env::temp_dir, Into::into);
    let path = dir.join(format!("otpd-frame-writes-{}.bin", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let frame = 24 + page;
    let bytes = vec![1u8; frames * frame];
    let commits = 20_000;
    for (name, gathered) in [
        ("two writes per frame", false),
        ("one write per commit", true),
    ] {
        for _ in 0..3 {
            let started = Instant::now();
            let mut off = 32u64;
            for _ in 0..commits {
                if off > 4 << 20 {
                    off = 32;
                }
                if gathered {
                    file.write_all_at(&bytes, off)?;
                } else {
                    for f in 0..frames {
                        let at = off + (f * frame) as u64;
                        file.write_all_at(&bytes[..24], at)?;
                        file.write_all_at(&bytes[24..frame], at + 24)?;
                    }
                }
                off += bytes.len() as u64;
            }
            let us = started.elapsed().as_secs_f64() * 1e6 / f64::from(commits);
            println!("{name}: {us:.2} µs per commit of {frames} frames of {page} bytes");
        }
    }
    std::fs::remove_file(&path)
}
