//! Writes small seed corpora for the fuzz targets into `fuzz/corpus/<target>/`, made from
//! real records and real store images (see each target's input format).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use convlog::format::{
    Kind, RECORD_HEADER_LEN, RecordMeta, SEGMENT_HEADER_LEN, SegmentHeader, SessionField,
    encode_record,
};
use convlog::io::sim::{SimFs, Tear};
use convlog::{Durability, Lsn, Store, Timestamp};

fn out_dir(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(out_dir(target).join(name), bytes).unwrap();
}

fn decode_record_seeds() {
    let salt = 0x0123_4567_89ab_cdefu64;
    let prefix = |mode: u8, max: u32| {
        let mut v = vec![mode];
        v.extend_from_slice(&salt.to_le_bytes());
        v.extend_from_slice(&max.to_le_bytes());
        v
    };
    for (i, kind) in Kind::ALL.iter().enumerate() {
        let mut v = prefix(0, 1 << 24);
        let payload: &[u8] = if *kind == Kind::Append {
            br#"{"role":"user","content":"hello"}"#
        } else {
            b""
        };
        // Every combination of the unit flags: a single record (both), a batch's first,
        // middle and last record.
        let meta = RecordMeta {
            kind: *kind,
            first: i % 4 < 2,
            commit: i % 2 == 0,
            lsn: Lsn(1 + i as u64),
            arg: 3,
            timestamp: Timestamp(1_700_000_000_000_000),
        };
        let session = if i % 2 == 0 {
            SessionField::Named(b"session-1")
        } else {
            SessionField::Ref(SEGMENT_HEADER_LEN as u32)
        };
        encode_record(&mut v, salt, &meta, session, None, payload);
        write("decode_record", &format!("record-{}", kind.name()), &v);
    }
    let mut v = prefix(4, 1024);
    v.extend_from_slice(
        &SegmentHeader {
            first_lsn: Lsn(1),
            salt,
            created: Timestamp(5),
            compacted: false,
        }
        .encode(),
    );
    write("decode_record", "segment-header", &v);
    let mut v = prefix(3, 64);
    v.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    v[13 + 14] = 2;
    v.extend_from_slice(b"s1{}");
    write("decode_record", "fixed-crcs", &v);
}

/// A store image as an `open_image` input: files as tag 4 (segments) and tag 2 (hints),
/// each named by its id in the body's first 8 bytes.
fn image_input(mode: u8, fs: &SimFs) -> Vec<u8> {
    let mut v = vec![mode];
    for p in fs.paths() {
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        let bytes = fs.read_file(&p).unwrap();
        let (tag, id) = if let Some(id) = name.strip_suffix(".seg") {
            (4u8, id.parse::<u64>().unwrap())
        } else if let Some(id) = name.strip_suffix(".hint") {
            (2u8, id.parse::<u64>().unwrap())
        } else {
            continue;
        };
        let mut body = id.to_le_bytes().to_vec();
        body.extend_from_slice(&bytes);
        let len = body.len().min(u16::MAX as usize);
        v.push(tag);
        v.push(0);
        v.extend_from_slice(&(len as u16).to_le_bytes());
        v.extend_from_slice(&body[..len]);
    }
    v
}

fn build_store(fs: &SimFs, n: u32, close: bool) {
    let store = Store::builder()
        .vfs(Arc::new(fs.clone()))
        .segment_size(4096)
        .durability(Durability::Buffered)
        .open("/db")
        .unwrap();
    for i in 0..n {
        let s = ["s0", "s1", "chat/2"][(i % 3) as usize];
        let msg = format!(
            r#"{{"role":"user","content":"message {i} {}"}}"#,
            "x".repeat((i % 7 * 40) as usize)
        );
        store.append_raw(s, msg.as_bytes()).unwrap();
        if i % 11 == 5 {
            store.pop_raw(s).unwrap();
        }
        if i % 13 == 7 {
            let b: Vec<&[u8]> = vec![br#"{"a":1}"#, br#"{"b":2}"#];
            store.append_batch_raw(s, &b).unwrap();
        }
    }
    store.truncate("s1", 3).unwrap();
    store.sync().unwrap();
    if close {
        drop(store);
    } else {
        // Written but never synced: a crash may tear these.
        for i in 0..6 {
            let msg = format!(
                r#"{{"role":"user","content":"unsynced {i} {}"}}"#,
                "y".repeat(300)
            );
            store.append_raw("s0", msg.as_bytes()).unwrap();
        }
        std::mem::forget(store);
    }
}

fn open_image_seeds() {
    let fs = SimFs::new(1);
    build_store(&fs, 40, true);
    write("open_image", "store-closed", &image_input(0, &fs));
    write("open_image", "store-closed-append", &image_input(8, &fs));
    write("open_image", "store-closed-salvage", &image_input(2, &fs));
    let fs = SimFs::new(2);
    build_store(&fs, 25, false);
    write("open_image", "store-open", &image_input(8, &fs));
    let crashed = fs.crash(Tear::Sectors(512));
    write("open_image", "store-crashed", &image_input(0, &crashed));
    let fs = SimFs::new(3);
    build_store(&fs, 6, true);
    write("open_image", "store-small-readonly", &image_input(4, &fs));
    // A synthesized two-segment chain (tag 1 with param bit 7).
    let mut v = vec![8u8];
    for _ in 0..2 {
        let mut prog = vec![0u8];
        prog.extend_from_slice(&7u64.to_le_bytes());
        prog.push(0);
        for (op, plen) in [(8u8, 7u8), (0, 2), (8, 2), (9, 0), (10, 0), (11, 0)] {
            prog.extend_from_slice(&[op, 1, 1, plen]);
            prog.extend_from_slice(&br#"{"a":1}"#[..usize::from(plen)]);
        }
        v.extend_from_slice(&[1, 0x80]);
        v.extend_from_slice(&(prog.len() as u16).to_le_bytes());
        v.extend_from_slice(&prog);
    }
    write("open_image", "synth-chain", &v);
    // One synthesized segment: a batch of three, then a record whose FIRST flag is wrong (it
    // starts a unit inside the next batch), the rest of that batch, and the preallocated
    // zeros after it; salvage mode.
    let mut prog = vec![0u8];
    prog.extend_from_slice(&9u64.to_le_bytes());
    prog.push(32);
    for (op, sess) in [(0u8, 1u8), (0, 1), (8, 1), (0, 2), (0, 1 | 8), (8, 1)] {
        prog.extend_from_slice(&[op, sess, 1, 7]);
        prog.extend_from_slice(br#"{"a":1}"#);
    }
    let mut v = vec![2u8, 1, 0];
    v.extend_from_slice(&(prog.len() as u16).to_le_bytes());
    v.extend_from_slice(&prog);
    write("open_image", "synth-framing", &v);
}

fn ops_crash_seeds() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for (i, config) in [0u8, 1, 4, 5, 6].iter().enumerate() {
        let mut v = vec![*config, i as u8];
        for _ in 0..(40 + i * 30) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            // Mostly appends (opcodes 0-4), the rest anything.
            let code = if b[0] % 3 == 0 { b[1] } else { b[1] % 5 };
            v.extend_from_slice(&[code, b[2], b[3]]);
        }
        write("ops_crash", &format!("seq-{i}"), &v);
    }
}

fn main() {
    decode_record_seeds();
    open_image_seeds();
    ops_crash_seeds();
    validate_json_seeds();
    println!("seed corpora written to {}", out_dir("").display());
}

/// Messages as agents write them, and near misses: the fuzzer mutates from valid JSON.
fn validate_json_seeds() {
    let seeds: [(&str, &[u8]); 8] = [
        ("chat", br#"{"role":"user","content":"What's the weather in Paris?"}"#),
        (
            "tool-call",
            br#"{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]}"#,
        ),
        ("numbers", br#"{"a":-0.5e+10,"b":1E3,"c":0,"d":[1,2.25,-7],"e":true,"f":false,"g":null}"#),
        ("escapes", br#"{"s":"tab\t nl\n quote\" bs\\ slash\/ \u00e9 \ud83c\udf89 \ud800"}"#),
        ("unicode", "{\"s\":\"Zürich → Milano 🎉 ☔\"}".as_bytes()),
        ("nested", br#"{"a":{"b":[{"c":[[[]]]}]}}"#),
        ("whitespace", b" \n\t{ \"a\" : [ 1 , 2 ] }\r\n"),
        ("near-miss", br#"{"a":[1,2,],"b":01}"#),
    ];
    for (name, bytes) in seeds {
        write("validate_json", name, bytes);
    }
}
