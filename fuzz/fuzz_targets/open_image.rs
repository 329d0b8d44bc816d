//! Opening an arbitrary store directory: `open` returns `Ok` or a typed error and never
//! panics or allocates without bound (run with `-rss_limit_mb=256`). A store that opens reads
//! back: each session yields exactly its count of messages (and `tail` its last ones), each
//! `Ok` or, only when the open trusted a hint instead of scanning a segment, `Corrupt`; when
//! the open scanned every segment, every read is `Ok`, in LSN order, at or below `last_lsn`.
//! A read-only open changes no file. A writable open takes an append (or refuses it with
//! `Corrupt` when it finds damage the open did not scan); after a clean close, a reopen finds
//! the same messages (and the append); when the first open scanned every segment (or
//! salvaged), that reopen is `Strict` and finds the store clean: recovery leaves nothing for
//! the next open to repair.
//!
//! Input (see `fuzz/corpus-gen` for the seeds):
//!
//! ```text
//! input := mode:u8 file*
//!   mode bits 0-1: recovery (0 point-in-time, 1 strict, 2 salvage, 3 point-in-time);
//!   bit 2: read-only; bit 3: append after a writable open
//! file := tag:u8 param:u8 len:u16le body[len]      (cut short at the end of the input)
//!   tag % 6 = 0  raw segment     {ID[param % 8]:020}.seg
//!             1  synthesized segment (body is a program, below), same name; with param
//!                bit 7, the id is the LSN after the previous synthesized segment
//!             2  raw hint named by the body's first 8 bytes (u64 LE): {id:020}.hint
//!             3  raw other file  LOCK, leftovers, foreign names, quarantine/, by param
//!             4  raw segment named by the body's first 8 bytes (u64 LE)
//!             5  raw segment     {param:020}.seg
//! ID = [1, 2, 3, 4, 5, 10, 17, 1000]
//!
//! segment program := lsn_mode:u8 salt:u64le hflags:u8 record*
//!   lsn_mode: first LSN = id (0), id + 1 (1), id - 1 (2), else 8 more bytes
//!   hflags bit 0: break the header CRC; 1: set the reserved flags; 2: the next version (newer; CRC
//!   fixed); 3: bad magic; 4: version 2 (older; CRC fixed); 5: pad the file with zeros to
//!   4096 bytes, as the writer preallocates
//! record := op:u8 sess:u8 arg:u8 plen:u8 payload[plen] [dpos:u8 if damaged]
//!   sess bits 0-2: session; bit 3: break the unit framing (FIRST set where the record
//!   continues an open unit, or clear where it must start one); bits 6-7: named on its first
//!   record in the segment and referred to after (0, 3), named again (1), a reference to
//!   offset 48 + (bits 0-5, so bit 3 also breaks the framing there) (2)
//!   op bits 0-2: kind (append, pop, truncate, clear, gap, unknown 0, unknown 9, append)
//!   bit 3: COMMIT (FIRST follows from it: set on a segment's first record and after each
//!   COMMIT); bits 4-5: LSN = expected, +1, -1, or the previous one again;
//!   bits 6-7: damage after encoding: none, flip a byte, cut the record, 512 zeros after it
//! ```
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use convlog::format::{
    RECORD_HEADER_LEN, RecordKey, RecordMeta, SEGMENT_HEADER_LEN, SegmentHeader, SessionField, encode_record,
};
use convlog::io::sim::SimFs;
use convlog::{Classification, Lsn, RecoveryMode, SegmentId, Store, Timestamp};
use libfuzzer_sys::fuzz_target;

const ID: [u64; 8] = [1, 2, 3, 4, 5, 10, 17, 1000];
const DIR: &str = "/db";

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u64(&mut self) -> u64 {
        let mut a = [0u8; 8];
        let b = self.bytes(8);
        a[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(a)
    }
}

fn path(name: &str) -> PathBuf {
    PathBuf::from(DIR).join(name)
}

/// Builds a segment from a program; returns its bytes and the LSN after its last record.
fn synth(id: u64, prog: &[u8]) -> (Vec<u8>, u64) {
    use convlog::format::Kind;
    let mut p = Input(prog);
    let first = match p.u8().unwrap_or(0) {
        0 => id,
        1 => id.wrapping_add(1),
        2 => id.wrapping_sub(1),
        _ => p.u64(),
    };
    let salt = p.u64();
    let hflags = p.u8().unwrap_or(0);
    let mut out = SegmentHeader {
        first_lsn: Lsn(first),
        salt,
        created: Timestamp(1),
        compacted: false,
    }
    .encode()
    .to_vec();
    if hflags & 2 != 0 {
        out[12] = 1;
    }
    if hflags & 4 != 0 {
        out[8] = (convlog::format::FORMAT_VERSION + 1) as u8;
    }
    if hflags & 16 != 0 {
        out[8] = 2;
    }
    if hflags & 22 != 0 {
        let crc = crc32fast::hash(&out[..44]);
        out[44..48].copy_from_slice(&crc.to_le_bytes());
    }
    if hflags & 1 != 0 {
        out[45] ^= 0x10;
    }
    if hflags & 8 != 0 {
        out[0] = b'X';
    }
    let sessions: [&[u8]; 5] = [b"s0", b"s1", b"chat/2", b"\xff\xfe", &[b'x'; 256]];
    let mut next = first;
    let mut last = first;
    let mut named: HashMap<&[u8], u32> = HashMap::new();
    // Whether the last record left a unit open (no COMMIT): the next one must not be FIRST.
    let mut open_unit = false;
    while let Some(op) = p.u8() {
        let sb = p.u8().unwrap_or(0);
        let sess = sessions[usize::from(sb & 7) % sessions.len()];
        let arg = u64::from(p.u8().unwrap_or(0));
        let plen = usize::from(p.u8().unwrap_or(0));
        let payload = p.bytes(plen).to_vec();
        let kind_code = op & 7;
        let commit = op & 8 != 0;
        let first_flag = !open_unit ^ (sb & 8 != 0);
        open_unit = !commit;
        let lsn = match (op >> 4) & 3 {
            0 => next,
            1 => next.wrapping_add(1),
            2 => next.wrapping_sub(1),
            _ => last,
        };
        let start = out.len();
        let field = match (sb >> 6, named.get(sess)) {
            (2, _) => SessionField::Ref(SEGMENT_HEADER_LEN as u32 + u32::from(sb & 0x3f)),
            (0 | 3, Some(&at)) => SessionField::Ref(at),
            _ => {
                named.insert(sess, start as u32);
                SessionField::Named(sess)
            }
        };
        match kind_code {
            0..=4 | 7 => {
                let kind = [
                    Kind::Append,
                    Kind::Pop,
                    Kind::Truncate,
                    Kind::Clear,
                    Kind::Gap,
                ][usize::from(kind_code % 5)];
                let kind = if kind_code == 7 { Kind::Append } else { kind };
                let meta = RecordMeta {
                    kind,
                    first: first_flag,
                    commit,
                    lsn: Lsn(lsn),
                    arg,
                    timestamp: Timestamp(2),
                };
                // Code 7: a keyed append, naming itself.
                let key = (kind_code == 7).then_some(RecordKey {
                    key: b"retry",
                    count: 1,
                });
                encode_record(&mut out, salt, &meta, field, key, &payload);
                next = if kind == Kind::Gap {
                    lsn.wrapping_add(arg.max(1))
                } else {
                    lsn.wrapping_add(1)
                };
            }
            _ => {
                // An unknown kind with valid checksums: encode as an append, then patch the
                // kind byte and the header CRC.
                let meta = RecordMeta {
                    kind: Kind::Append,
                    first: first_flag,
                    commit,
                    lsn: Lsn(lsn),
                    arg,
                    timestamp: Timestamp(2),
                };
                encode_record(&mut out, salt, &meta, field, None, &payload);
                out[start + 12] = if kind_code == 5 { 0 } else { 9 };
                let mut h = crc32fast::Hasher::new_with_initial(convlog::format::crc_seed(salt));
                h.update(&out[start + 4..start + RECORD_HEADER_LEN + field.inline_len()]);
                let crc = h.finalize();
                out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
                next = lsn.wrapping_add(1);
            }
        }
        last = lsn;
        match op >> 6 {
            1 => {
                let len = out.len() - start;
                let at = start + usize::from(p.u8().unwrap_or(0)) % len;
                out[at] ^= 0x5a;
            }
            2 => {
                let len = out.len() - start;
                let cut = start + usize::from(p.u8().unwrap_or(0)) % len;
                out.truncate(cut);
            }
            3 => {
                let _ = p.u8();
                out.extend_from_slice(&[0u8; 512]);
            }
            _ => {}
        }
    }
    if hflags & 32 != 0 && out.len() < 4096 {
        out.resize(4096, 0);
    }
    (out, next)
}

fn other_name(param: u8) -> &'static str {
    const NAMES: [&str; 11] = [
        "LOCK",
        "WRITERS",
        "00000000000000000001.seg.salvage",
        "00000000000000000001.hint.tmp",
        "x.seg",
        "0000000000000000001.seg",
        "00000000000000000001.SEG",
        "README",
        "00000000000000000002.hint",
        // A file where recovery puts its quarantine directory, and a leftover inside it.
        "quarantine",
        "quarantine/00000000000000000001-000000000048.bin",
    ];
    NAMES[usize::from(param) % NAMES.len()]
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(mode) = input.u8() else { return };
    let fs = SimFs::new(u64::from(mode));
    let mut chain = 1u64;
    let mut files = 0;
    while let (Some(tag), Some(param)) = (input.u8(), input.u8()) {
        let len = usize::from(input.u8().unwrap_or(0)) | usize::from(input.u8().unwrap_or(0)) << 8;
        let body = input.bytes(len);
        files += 1;
        if files > 12 {
            break;
        }
        match tag % 6 {
            0 => fs.write_file(
                &path(&SegmentId(ID[usize::from(param) % 8]).file_name()),
                body,
            ),
            1 => {
                let id = if param & 0x80 != 0 {
                    chain
                } else {
                    ID[usize::from(param) % 8]
                };
                let (bytes, next) = synth(id, body);
                chain = next;
                fs.write_file(&path(&SegmentId(id).file_name()), &bytes);
            }
            2 => {
                let mut b = Input(body);
                let id = b.u64();
                fs.write_file(&path(&format!("{id:020}.hint")), b.0);
            }
            3 => fs.write_file(&path(other_name(param)), body),
            4 => {
                let mut b = Input(body);
                let id = b.u64();
                fs.write_file(&path(&SegmentId(id).file_name()), b.0);
            }
            _ => fs.write_file(&path(&SegmentId(u64::from(param)).file_name()), body),
        }
    }
    let recovery = match mode & 3 {
        1 => RecoveryMode::Strict,
        2 => RecoveryMode::Salvage,
        _ => RecoveryMode::PointInTime,
    };
    let read_only = mode & 4 != 0;
    let open = |recovery: RecoveryMode, read_only: bool| {
        Store::builder()
            .vfs(Arc::new(fs.clone()))
            .segment_size(4096)
            .recovery(recovery)
            .read_only(read_only)
            .open(DIR)
    };
    let image = read_only.then(|| dir_image(&fs));
    let Ok(store) = open(recovery, read_only) else {
        return; // any typed error is fine
    };
    let mut contents = read_back(&store);
    if let Some(image) = image {
        drop(store);
        assert!(
            image == dir_image(&fs),
            "a read-only open changed the directory"
        );
        return;
    }
    // Salvage rewrites what it keeps from records it verified, so the hints it writes are
    // as good as a scan.
    let scanned = store.recovery_report().hints_used == 0 || recovery == RecoveryMode::Salvage;
    if mode & 8 != 0 {
        let before = store.last_lsn();
        match store.append_raw(SESSION, AFTER) {
            Ok(receipt) => {
                assert_eq!(receipt.lsn, before.next());
                contents
                    .entry(SESSION.to_owned())
                    .or_default()
                    .push(Some(AFTER.to_vec()));
            }
            // A segment loaded from its hint is verified before the first append into it:
            // damage found then refuses the write (and changes nothing).
            Err(convlog::Error::Corrupt { .. }) if !scanned => {}
            // A message sealed as an encrypted store seals it, in a store without `KEYS`:
            // its key file looks lost, and no write may add plaintext beside it.
            Err(convlog::Error::KeyFile { .. }) => {}
            // A torn tail behind a hint is cut (its bytes kept in `quarantine/`) before the
            // first append: where a file named `quarantine` is in the way, the append is
            // refused as an open that cuts a tail is, naming the path (nothing is changed).
            Err(convlog::Error::Io { path, .. }) if path.ends_with(convlog::QUARANTINE_DIR) => {}
            Err(e) => panic!("a store that opened writable refused an append: {e:?}"),
        }
    }
    drop(store);
    let again_mode = if scanned {
        RecoveryMode::Strict
    } else {
        RecoveryMode::PointInTime
    };
    let again = match open(again_mode, false) {
        Ok(s) => s,
        Err(e) => panic!("a store closed cleanly does not reopen ({again_mode:?}): {e:?}"),
    };
    if scanned {
        let report = again.recovery_report();
        assert_eq!(
            report.classification(),
            Classification::Clean,
            "recovery left damage behind: {report:?}"
        );
    }
    let found = read_back(&again);
    assert!(
        found == contents,
        "a reopen found other messages:\n before: {contents:?}\n after: {found:?}"
    );
});

const SESSION: &str = "fuzz-after-open";
const AFTER: &[u8] = br#"{"role":"user","content":"after"}"#;

/// Every file of the image, with its bytes.
fn dir_image(fs: &SimFs) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    fs.paths()
        .into_iter()
        .map(|p| {
            let b = fs.read_file(&p);
            (p, b)
        })
        .collect()
}

/// Reads every session of an open store back, checking what any open store guarantees;
/// returns each session's messages (`None` for one whose read failed).
fn read_back(store: &Store) -> BTreeMap<String, Vec<Option<Vec<u8>>>> {
    // Whether the open read every record the index holds (and so checked it).
    let scanned = store.recovery_report().hints_used == 0;
    let last = store.last_lsn();
    let mut out = BTreeMap::new();
    let mut total = 0;
    for s in store.sessions() {
        let mut msgs = Vec::new();
        let mut prev = Lsn(0);
        for (i, e) in store.messages(&s.id).raw().enumerate() {
            match e {
                Ok(e) => {
                    assert_eq!(e.interaction_id, i as u64 + 1, "session {:?}", s.id);
                    if scanned {
                        assert!(
                            prev < e.lsn && e.lsn <= last,
                            "session {:?}: message {} at LSN {:?} after {prev:?} (last {last:?})",
                            s.id,
                            i + 1,
                            e.lsn
                        );
                    }
                    prev = e.lsn;
                    msgs.push(Some(e.message));
                }
                Err(convlog::Error::Corrupt { .. }) if !scanned => msgs.push(None),
                // A payload that starts like a sealed one (0x01, never JSON text) in a store
                // without a key file: refused, typed, as an encrypted store's would be.
                Err(convlog::Error::KeyRequired { .. }) => msgs.push(None),
                Err(e) => panic!("session {:?}: message {} does not read: {e:?}", s.id, i + 1),
            }
        }
        assert_eq!(msgs.len() as u64, s.count, "session {:?}", s.id);
        assert_eq!(
            store.tail(&s.id, 2).raw().count() as u64,
            s.count.min(2),
            "session {:?}",
            s.id
        );
        total += s.count;
        out.insert(s.id, msgs);
    }
    assert_eq!(store.stats().messages, total);
    out
}
