//! An arbitrary sequence of operations, crashes (each tear), reopens, process kills and
//! injected I/O faults on the simulated file system, checked after every step against the
//! model in `tests/common/mod.rs` (the same harness as `tests/crash_model.rs` and
//! `tests/faults.rs`): a crash recovers a prefix of the committed units holding every
//! acknowledged-durable one, a reopen or kill loses nothing written, a failed fsync poisons.
//!
//! Input: `config: u8, seed: u8, (opcode: u8, a: u8, b: u8)*` (at most 200 operations);
//! config bits 0-1: segment size, bit 2: durability, bit 7: an encrypted store.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../tests/common/mod.rs"]
mod common;

use common::{Harness, Op};
use libfuzzer_sys::fuzz_target;

fn op(code: u8, a: u8, b: u8) -> Op {
    let len = u16::from(b) * 23;
    match code % 22 {
        0..=4 => Op::Append {
            s: a,
            len,
            typed: code & 0x10 != 0,
        },
        5 => Op::Batch {
            s: a,
            n: b % 6,
            len: u16::from(a) * 11,
        },
        6 => Op::AppendIf {
            s: a,
            delta: (b % 5) as i8 - 2,
            len,
        },
        7 => Op::Pop {
            s: a,
            typed: b & 1 != 0,
        },
        8 => Op::Truncate {
            s: a,
            keep: u16::from(b),
        },
        9 => Op::Clear { s: a },
        10 => Op::Sync,
        11 => Op::Crash {
            tear: a,
            durability: b,
        },
        12 => Op::Reopen { durability: a },
        13 => Op::Kill { durability: a },
        14 => Op::Check,
        15 => Op::Replace {
            s: a,
            n: b,
            len: u16::from(a) * 13,
            stale: code & 0x20 != 0,
        },
        16 => Op::Fork {
            s: a,
            d: b,
            at: u16::from(code >> 4),
        },
        17 => Op::KeyedAppend {
            s: a,
            k: b,
            n: b >> 3,
            len: u16::from(a) * 7,
            again: code & 0x20 != 0,
        },
        18 => Op::SetMeta {
            s: a,
            tag: b,
            len,
            typed: code & 0x20 != 0,
        },
        19 => Op::Delete { s: a },
        20 => Op::Compact,
        _ => Op::Fault {
            after: a,
            kind: b,
            sticky: code & 0x10 != 0,
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let (Some(&config), Some(&seed)) = (data.first(), data.get(1)) else {
        return;
    };
    let seg = [4096u64, 8192, 16384, 65536][usize::from(config & 3)];
    let durability = common::durability(config >> 2);
    let ops: Vec<Op> = data[2..]
        .chunks_exact(3)
        .take(200)
        .map(|c| op(c[0], c[1], c[2]))
        .collect();
    // Config bit 7: an encrypted store (every check reads through the seals; crashes hit
    // the key file too).
    let made = if config & 0x80 != 0 {
        Harness::encrypted(u64::from(seed), seg, durability)
    } else {
        Harness::new(u64::from(seed), seg, durability)
    };
    let mut h = match made {
        Ok(h) => h,
        Err(v) => panic!("{v}"),
    };
    for op in &ops {
        if let Err(v) = h.apply(op) {
            panic!("{v}");
        }
    }
    if let Err(v) = h.finish() {
        panic!("{v}");
    }
});
