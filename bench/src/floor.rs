//! What the disk can physically do: a loop of `pwrite(record) + fdatasync`, with no store.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const PREALLOCATED: u64 = 32 << 20;

/// Writes `record_len`-byte records back to back, each followed by `fdatasync`, for `run`.
/// With `preallocate`, the file is first filled with zeros and synced, so a sync only has
/// to flush data; otherwise every write grows the file and the sync also commits its new
/// size. Returns (syncs, elapsed).
pub fn write_sync_loop(
    path: &Path,
    record_len: usize,
    preallocate: bool,
    run: Duration,
) -> (u64, Duration) {
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(path)
        .expect("create floor file");
    if preallocate {
        fill_zeros(&file, PREALLOCATED);
    }
    let record: Vec<u8> = (0..record_len).map(|i| b'a' + (i % 26) as u8).collect();
    let mut off = 0u64;
    let mut n = 0u64;
    let t = Instant::now();
    while t.elapsed() < run {
        if preallocate && off + record_len as u64 > PREALLOCATED {
            off = 0;
        }
        file.write_all_at(&record, off).expect("write");
        file.sync_data().expect("fdatasync");
        off += record_len as u64;
        n += 1;
    }
    let elapsed = t.elapsed();
    drop(file);
    let _ = std::fs::remove_file(path);
    (n, elapsed)
}

fn fill_zeros(file: &File, len: u64) {
    let zeros = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < len {
        file.write_all_at(&zeros, off).expect("preallocate");
        off += zeros.len() as u64;
    }
    file.sync_all().expect("fsync");
}
