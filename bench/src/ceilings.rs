//! The machine's ceilings for a buffered append, measured on the same messages in the same
//! run as the appends they bound (issue 12):
//!
//! - (a) the intrinsic CPU work of an append: validate the JSON object, frame the record
//!   (the library's own `encode_record`: its header, both CRCs), copy it into a write buffer;
//!   no store, no lock, no system call;
//! - (b) how fast the same framed bytes reach the page cache in large sequential writes.
//!
//! An append can go no faster than either; `target` is what the issue asks of
//! `append_raw`: 40% of (a) or 80% of (b), whichever is lower.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use convlog::format::{RecordMeta, SessionField, encode_record};
use convlog::{Kind, Lsn, Timestamp};
use serde::de::IgnoredAny;

use crate::workload::Corpus;

/// The write buffer (a): emptied when it passes this, as a store's would be by a write.
const BUFFER: usize = 1 << 20;
/// One write of (b).
const WRITE: usize = 1 << 20;
/// A salt for the framing (any value: nothing decodes these records).
const SALT: u64 = 0x5eed_cafe_f00d_d00d;

/// Both ceilings, in appends per second.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ceilings {
    pub cpu: f64,
    pub page_cache: f64,
    /// (b) in bytes per second.
    pub page_cache_bytes: f64,
}

impl Ceilings {
    /// The bar for `append_raw`: 40% of (a) or 80% of (b), whichever is lower.
    pub fn target(&self) -> f64 {
        (0.4 * self.cpu).min(0.8 * self.page_cache)
    }
}

/// Frames message `i` of `corpus` into `out` as a store would: its session named inline in
/// the first record of that session (per buffer), referred to by offset after.
fn frame(corpus: &Corpus, sessions: &[String], i: usize, first_at: &mut [u32], out: &mut Vec<u8>) {
    let s = corpus.session[i] as usize;
    let at = first_at[s];
    let session = if at == u32::MAX {
        first_at[s] = out.len() as u32;
        SessionField::Named(sessions[s].as_bytes())
    } else {
        SessionField::Ref(at)
    };
    let meta = RecordMeta {
        kind: Kind::Append,
        first: true,
        commit: true,
        lsn: Lsn(i as u64 + 1),
        arg: i as u64 + 1,
        timestamp: Timestamp(1_700_000_000_000_000 + i as u64),
    };
    encode_record(out, SALT, &meta, session, None, corpus.get(i));
}

/// (a): validate, frame and copy every message of `corpus`; appends per second.
pub fn cpu(corpus: &Corpus, sessions: &[String]) -> f64 {
    let mut out = Vec::with_capacity(BUFFER + (64 << 10));
    let mut first_at = vec![u32::MAX; sessions.len()];
    let t = Instant::now();
    for i in 0..corpus.len() {
        let json = corpus.get(i);
        let ok = json.first() == Some(&b'{') && serde_json::from_slice::<IgnoredAny>(json).is_ok();
        assert!(ok, "the corpus holds JSON objects");
        if out.len() >= BUFFER {
            std::hint::black_box(&out);
            out.clear();
            first_at.fill(u32::MAX);
        }
        frame(corpus, sessions, i, &mut first_at, &mut out);
    }
    std::hint::black_box(&out);
    corpus.len() as f64 / t.elapsed().as_secs_f64()
}

/// (b): every message of `corpus`, framed (untimed), written to a new file at `path` in
/// [`WRITE`]-byte writes; (appends per second, bytes per second). The file is synced
/// (untimed, so that its dirty pages do not slow what runs next) and removed.
pub fn page_cache(corpus: &Corpus, sessions: &[String], path: &Path) -> (f64, f64) {
    let mut all = Vec::with_capacity(corpus.input_bytes() as usize + corpus.len() * 64);
    let mut first_at = vec![u32::MAX; sessions.len()];
    for i in 0..corpus.len() {
        frame(corpus, sessions, i, &mut first_at, &mut all);
    }
    let mut file = File::create_new(path).expect("create the page-cache ceiling's file");
    let t = Instant::now();
    for chunk in all.chunks(WRITE) {
        file.write_all(chunk).expect("write");
    }
    let secs = t.elapsed().as_secs_f64();
    file.sync_all().expect("sync");
    drop(file);
    let _ = std::fs::remove_file(path);
    (corpus.len() as f64 / secs, all.len() as f64 / secs)
}
