//! What the disk can physically do, with no store: a loop of `pwrite(record) + fdatasync`,
//! and the same from several threads sharing each sync (the floor for a group commit).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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
    let file = create(path);
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

/// What [`group_commit_loop`] measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Group {
    pub appends: u64,
    pub elapsed: Duration,
    pub syncs: u64,
    /// The 99th percentile of one append's latency (write to durable), in seconds.
    pub p99: f64,
}

/// The file's write position and how far it is written and synced.
#[derive(Default)]
struct Log {
    /// Where the next record goes (bytes written so far, wrapping in the preallocation).
    written: u64,
    synced: u64,
    syncing: bool,
    syncs: u64,
}

/// `threads` threads, each writing `record_len`-byte records to one preallocated file and
/// waiting for each to be durable, for `run`: a thread that finds no sync under way becomes
/// the leader and syncs whatever all of them have written; the others wait for it (the
/// least a group commit can do: no framing, no index, no lock file).
pub fn group_commit_loop(path: &Path, record_len: usize, threads: usize, run: Duration) -> Group {
    let file = create(path);
    fill_zeros(&file, PREALLOCATED);
    let shared = Arc::new((file, Mutex::new(Log::default()), Condvar::new()));
    let record: Arc<Vec<u8>> = Arc::new((0..record_len).map(|i| b'a' + (i % 26) as u8).collect());
    let (mut lat, elapsed) = timed_threads(threads, run, |_| {
        let (shared, record) = (shared.clone(), record.clone());
        move |_| {
            let (file, log, done) = &*shared;
            let mut l = log.lock().unwrap();
            let off = l.written % (PREALLOCATED - record_len as u64);
            file.write_all_at(&record, off).expect("write");
            l.written += record_len as u64;
            let mine = l.written;
            while l.synced < mine {
                if l.syncing {
                    l = done.wait(l).unwrap();
                    continue;
                }
                l.syncing = true;
                let upto = l.written;
                drop(l);
                file.sync_data().expect("fdatasync");
                l = log.lock().unwrap();
                l.syncing = false;
                l.synced = upto;
                l.syncs += 1;
                done.notify_all();
            }
        }
    });
    let syncs = shared.1.lock().unwrap().syncs;
    drop(shared);
    let _ = std::fs::remove_file(path);
    Group {
        appends: lat.len() as u64,
        elapsed,
        syncs,
        p99: p99(&mut lat),
    }
}

/// Runs `threads` threads for `run`, thread `t` calling the operation `make(t)` returns back to
/// back (with its call count); returns every call's latency in seconds, and the elapsed time.
pub fn timed_threads<Op>(
    threads: usize,
    run: Duration,
    make: impl Fn(usize) -> Op,
) -> (Vec<f64>, Duration)
where
    Op: FnMut(u64) + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let t = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|th| {
            let (stop, mut op) = (stop.clone(), make(th));
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    op(lat.len() as u64);
                    lat.push(start.elapsed().as_secs_f64());
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(run);
    stop.store(true, Ordering::Relaxed);
    let lat = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    (lat, t.elapsed())
}

/// Creates the floor's file at `path` (which must not exist).
fn create(path: &Path) -> File {
    OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(path)
        .expect("create floor file")
}

/// The 99th percentile of `v` (0 when empty).
pub fn p99(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() * 99 / 100).copied().unwrap_or(0.0)
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
