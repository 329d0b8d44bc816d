//! Criterion micro-benchmarks of the record codec: `convlog::format::encode_record` and
//! `decode_record` (which verifies both CRCs) on 200 B, 1 KiB and 16 KiB payloads.
//!
//! `cargo bench -p convlog-bench --bench codec`

use std::hint::black_box;

use convlog::format::{
    DEFAULT_MAX_RECORD_LEN, Decoded, Kind, RECORD_HEADER_LEN, RecordMeta, SessionField,
    decode_record, encode_record,
};
use convlog::{Lsn, Timestamp};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SALT: u64 = 0x0123_4567_89ab_cdef;
/// A named record (a session's first in its segment: the costliest shape).
const SESSION: SessionField<'static> = SessionField::Named(b"0f8fad5b-d9cb-469f-a165-70867728950e");
const SIZES: [usize; 3] = [200, 1024, 16 << 10];

/// A JSON object of exactly `len` bytes.
fn payload(len: usize) -> Vec<u8> {
    let prefix = br#"{"role":"assistant","content":""#;
    let suffix = br#""}"#;
    let mut v = prefix.to_vec();
    let body = len - prefix.len() - suffix.len();
    v.extend((0..body).map(|i| b"abcdefghij klmnopqrstuvwxyz"[i % 27]));
    v.extend_from_slice(suffix);
    assert_eq!(v.len(), len);
    v
}

fn meta() -> RecordMeta {
    RecordMeta {
        kind: Kind::Append,
        first: true,
        commit: true,
        lsn: Lsn(123_456),
        arg: 789,
        timestamp: Timestamp(1_750_000_000_000_000),
    }
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_record");
    for size in SIZES {
        let p = payload(size);
        let mut out = Vec::with_capacity(RECORD_HEADER_LEN + SESSION.inline_len() + size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &p, |b, p| {
            b.iter(|| {
                out.clear();
                encode_record(&mut out, SALT, &meta(), SESSION, None, black_box(p));
                black_box(out.len())
            });
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_record");
    for size in SIZES {
        let mut rec = Vec::new();
        encode_record(&mut rec, SALT, &meta(), SESSION, None, &payload(size));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &rec, |b, rec| {
            b.iter(
                || match decode_record(black_box(rec), SALT, DEFAULT_MAX_RECORD_LEN) {
                    Decoded::Record(r) => r.payload.len(),
                    other => panic!("decode failed: {other:?}"),
                },
            );
        });
    }
    g.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
