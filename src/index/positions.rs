//! A session's record positions: runs borrowed from mapped hint files, then owned positions.
//!
//! Why: copying every offset of every hint into per-session vectors on open costs ~8 bytes of
//! fresh heap per message, written and page-faulted in before the first read (at 200k
//! messages, most of the open). A hint already holds a session's offsets in one segment as
//! consecutive little-endian `u32`s, and hint files never change once renamed into place, so
//! the index keeps the hints mapped and a session's positions refer to those bytes instead:
//! opening costs one 16-byte run per (session, segment), and a read resolves only the
//! positions it returns (a binary search over the session's runs, then one `u32` each).

use std::sync::Arc;

use crate::io::Mapping;

use super::Pos;

/// Hint files the index borrows offsets from, by segment ordinal.
///
/// Invariant: a hint is only added after it was validated (checksum and structure, see
/// `hint::parse`), and its bytes never change (hint files are renamed into place whole and
/// never written again; a newer hint for the same segment is a new file).
#[derive(Debug, Default)]
pub(crate) struct MappedHints(Vec<Option<Mapping>>);

impl MappedHints {
    /// Keeps the hint of segment `seg` for runs to borrow from.
    pub(crate) fn insert(&mut self, seg: u32, bytes: Mapping) {
        let i = seg as usize;
        if self.0.len() <= i {
            self.0.resize(i + 1, None);
        }
        self.0[i] = Some(bytes);
    }

    /// The hint of segment `seg`, if kept.
    fn get(&self, seg: u32) -> Option<&Mapping> {
        self.0.get(seg as usize)?.as_ref()
    }

    /// Whether segment `seg` has a hint here.
    pub(crate) fn contains(&self, seg: u32) -> bool {
        self.0.get(seg as usize).is_some_and(Option::is_some)
    }

    /// The bytes of offsets `j0..j1` of the run of segment `seg` whose offsets start at byte
    /// `at`; empty if they are not all there (a broken invariant, not a file-system condition).
    fn offsets(&self, seg: u32, at: u32, j0: u64, j1: u64) -> &[u8] {
        let range = || {
            let start = usize::try_from(j0.checked_mul(4)?.checked_add(at.into())?).ok()?;
            let end = usize::try_from(j1.checked_mul(4)?.checked_add(at.into())?).ok()?;
            self.0.get(seg as usize)?.as_deref()?.get(start..end)
        };
        range().unwrap_or(&[])
    }

    /// Bytes of the hint files kept (mapped: page cache, not heap; counted whole).
    pub(crate) fn bytes(&self) -> usize {
        self.0.iter().flatten().map(|m| m.len()).sum::<usize>()
            + self.0.capacity() * size_of::<Option<Mapping>>()
    }
}

/// Consecutive appends of one segment, whose offsets are the little-endian `u32`s at byte
/// `at` of that segment's hint in [`MappedHints`]; as many as `end` minus the previous run's
/// `end` (0 for the first run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    seg: u32,
    at: u32,
    /// Positions up to and including this run (the index of the position after it).
    end: u64,
}

/// How many owned positions one block holds. Blocks are shared with read snapshots, so a
/// push into a block a reader holds copies at most this many positions.
const BLOCK: usize = 256;

/// A session's positions in log order: `runs` first, then the owned `blocks`.
///
/// Invariants: `runs[k].end` strictly increase (every run is non-empty), so position
/// `i < runs_end` lies in the first run whose `end > i`; every run's offsets are in the
/// `MappedHints` the caller resolves positions with. Every block but the last holds exactly
/// [`BLOCK`] positions, and no block is empty. Appends always go to the blocks: a run comes
/// only from a hint, and a run that would follow owned positions (a hinted segment after a
/// scanned one) is copied into the blocks instead, so the order is kept. Blocks are
/// copy-on-write (`Arc`): a [`Snapshot`] keeps the ones it covers as they were.
#[derive(Debug, Default, Clone)]
struct Own {
    runs: Vec<Run>,
    blocks: Vec<Arc<Vec<Pos>>>,
}

/// A session's positions: a prefix shared with the session it was forked from (if any), then
/// its own runs and blocks.
///
/// Invariant: `base.len` is at most the length of `base.src`, which no one changes (it is a
/// frozen copy: its parts are shared copy-on-write with the source session, which copies its
/// block table on its next change). A fork costs O(1); reads of a fork resolve a prefix
/// position through the chain of bases.
#[derive(Debug, Default, Clone)]
pub(crate) struct Positions {
    base: Option<Base>,
    own: Arc<Own>,
}

/// The shared prefix of a forked session.
#[derive(Debug, Clone)]
struct Base {
    src: Arc<Positions>,
    len: u64,
}

impl Positions {
    fn base_len(&self) -> u64 {
        self.base.as_ref().map_or(0, |b| b.len)
    }

    /// How many positions there are.
    pub(crate) fn len(&self) -> u64 {
        self.base_len() + self.own.len()
    }

    /// Adds one position at the end.
    pub(crate) fn push(&mut self, pos: Pos) {
        Arc::make_mut(&mut self.own).push(pos);
    }

    /// Adds the `count` appends of a hint's run for segment `seg` (see [`Own::push_run`]).
    pub(crate) fn push_run(&mut self, hints: &MappedHints, seg: u32, at: usize, count: u64) {
        Arc::make_mut(&mut self.own).push_run(hints, seg, at, count);
    }

    /// Keeps the first `keep` positions.
    pub(crate) fn truncate(&mut self, keep: u64) {
        let base = self.base_len();
        if keep >= base {
            if keep - base < self.own.len() {
                Arc::make_mut(&mut self.own).truncate(keep - base);
            }
            return;
        }
        self.own = Arc::default();
        match &mut self.base {
            Some(b) if keep > 0 => b.len = keep,
            _ => self.base = None,
        }
    }

    /// A new session's positions: the first `at` of these, shared. O(1).
    pub(crate) fn fork(&self, at: u64) -> Positions {
        let len = at.min(self.len());
        if len == 0 {
            return Positions::default();
        }
        Positions {
            base: Some(Base {
                src: Arc::new(self.clone()),
                len,
            }),
            own: Arc::default(),
        }
    }

    /// The position at index `i` (0-based); `None` past the end.
    pub(crate) fn get(&self, hints: &MappedHints, i: u64) -> Option<Pos> {
        self.snapshot(hints, i, i.saturating_add(1)).get(i)
    }

    /// The positions at indexes `from..to` (0-based; clamped to the end), as they are now,
    /// for as long as the snapshot lives: later appends, pops and truncations do not change
    /// it. Costs O(log runs) plus a clone of the runs and blocks it covers.
    pub(crate) fn snapshot(&self, hints: &MappedHints, from: u64, to: u64) -> Snapshot {
        let to = to.min(self.len());
        let from = from.min(to);
        let base_len = self.base_len();
        let base = match &self.base {
            Some(b) if from < base_len => {
                Some(Box::new(b.src.snapshot(hints, from, to.min(base_len))))
            }
            _ => None,
        };
        let mut own = self.own.snapshot(
            hints,
            from.saturating_sub(base_len),
            to.saturating_sub(base_len),
            base_len,
        );
        own.base = base;
        own.from = from;
        own.to = to;
        own
    }

    /// Heap bytes held (at capacity) by its own part; a shared prefix is counted where it
    /// came from. The hint bytes runs borrow are counted by [`MappedHints::bytes`].
    pub(crate) fn heap_bytes(&self) -> usize {
        self.own.heap_bytes() + self.base.as_ref().map_or(0, |_| size_of::<Positions>())
    }
}

impl Own {
    /// How many positions there are.
    fn len(&self) -> u64 {
        self.runs_end() + self.owned_len()
    }

    fn owned_len(&self) -> u64 {
        match self.blocks.last() {
            Some(b) => ((self.blocks.len() - 1) * BLOCK + b.len()) as u64,
            None => 0,
        }
    }

    fn runs_end(&self) -> u64 {
        self.runs.last().map_or(0, |r| r.end)
    }

    /// Adds one position at the end.
    fn push(&mut self, pos: Pos) {
        match self.blocks.last_mut() {
            Some(b) if b.len() < BLOCK => Arc::make_mut(b).push(pos),
            // A new block grows as a vector does (a small session holds a small one).
            _ => self.blocks.push(Arc::new(vec![pos])),
        }
    }

    /// Adds the `count` appends of a hint's run for segment `seg`, whose offsets are the
    /// `u32`s at byte `at` of that hint in `hints`, at the end. Borrows them in place unless
    /// owned positions come first (then copies them).
    fn push_run(&mut self, hints: &MappedHints, seg: u32, at: usize, count: u64) {
        if count == 0 {
            return;
        }
        match u32::try_from(at) {
            Ok(at) if self.blocks.is_empty() => {
                let end = self.runs_end() + count;
                self.runs.push(Run { seg, at, end });
            }
            // Owned positions come first (or `at` is past 4 GiB, which no hint reaches): copy.
            _ => {
                let at = u32::try_from(at).unwrap_or(u32::MAX);
                for c in hints.offsets(seg, at, 0, count).chunks_exact(4) {
                    let off = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    self.push(Pos { seg, off });
                }
            }
        }
    }

    /// Keeps the first `keep` positions.
    fn truncate(&mut self, keep: u64) {
        let runs_end = self.runs_end();
        if keep >= runs_end {
            let keep = usize::try_from(keep - runs_end).unwrap_or(usize::MAX);
            if keep >= self.owned_len() as usize {
                return;
            }
            self.blocks.truncate(keep.div_ceil(BLOCK));
            if let Some(b) = self.blocks.last_mut()
                && keep % BLOCK != 0
            {
                Arc::make_mut(b).truncate(keep % BLOCK);
            }
            return;
        }
        self.blocks = Vec::new();
        // The run holding position `keep` (the first one dropped) ends the kept runs, cut
        // at `keep`; it goes too if that leaves it empty.
        let k = self.runs.partition_point(|r| r.end <= keep);
        self.runs.truncate(k + 1);
        if self.run_start(k) == keep {
            self.runs.pop();
        } else if let Some(r) = self.runs.last_mut() {
            r.end = keep;
        }
    }

    /// Where run `k` starts: the previous run's end.
    fn run_start(&self, k: usize) -> u64 {
        k.checked_sub(1)
            .and_then(|p| self.runs.get(p))
            .map_or(0, |r| r.end)
    }

    /// The positions `from..to` of this part (clamped), indexed from `offset` (where the
    /// part starts in its session).
    fn snapshot(&self, hints: &MappedHints, from: u64, to: u64, offset: u64) -> Snapshot {
        let to = to.min(self.len());
        let from = from.min(to);
        let k = self.runs.partition_point(|r| r.end <= from);
        let runs = self.runs[k..]
            .iter()
            .zip(k..)
            .map(|(r, k)| (r, self.run_start(k)))
            .take_while(|&(_, start)| start < to)
            .filter_map(|(r, start)| {
                Some(SnapRun {
                    start: offset + start,
                    end: offset + r.end,
                    at: r.at,
                    seg: r.seg,
                    hint: hints.get(r.seg)?.clone(),
                })
            })
            .collect();
        let runs_end = self.runs_end();
        let owned = |i: u64| usize::try_from(i.saturating_sub(runs_end)).unwrap_or(usize::MAX);
        let (b0, b1) = (owned(from) / BLOCK, owned(to).div_ceil(BLOCK));
        let blocks = self
            .blocks
            .get(b0..b1.min(self.blocks.len()))
            .unwrap_or(&[])
            .to_vec();
        Snapshot {
            base: None,
            runs,
            blocks,
            own_start: offset,
            blocks_start: offset + runs_end + (b0 * BLOCK) as u64,
            from: offset + from,
            to: offset + to,
        }
    }

    /// Heap bytes held (at capacity).
    fn heap_bytes(&self) -> usize {
        self.runs.capacity() * size_of::<Run>()
            + self.blocks.capacity() * size_of::<Arc<Vec<Pos>>>()
            + self
                .blocks
                .iter()
                .map(|b| b.capacity() * size_of::<Pos>() + 2 * size_of::<usize>())
                .sum::<usize>()
    }
}

/// A run as a snapshot keeps it: with its hint's bytes.
#[derive(Debug, Clone)]
struct SnapRun {
    start: u64,
    end: u64,
    seg: u32,
    at: u32,
    hint: Mapping,
}

/// A session's positions `from..to` as they were when it was taken (see
/// [`Positions::snapshot`]): the runs and blocks it covers, shared, never changed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// The part of the range in the session's shared prefix (a fork's).
    base: Option<Box<Snapshot>>,
    /// Where the session's own part starts: indexes below are in `base`.
    own_start: u64,
    runs: Vec<SnapRun>,
    blocks: Vec<Arc<Vec<Pos>>>,
    /// The index of `blocks[0][0]`.
    blocks_start: u64,
    from: u64,
    to: u64,
}

impl Snapshot {
    /// The indexes it covers.
    pub(crate) fn range(&self) -> std::ops::Range<u64> {
        self.from..self.to
    }

    /// The position at index `i`; `None` outside [`Snapshot::range`].
    pub(crate) fn get(&self, i: u64) -> Option<Pos> {
        if !self.range().contains(&i) {
            return None;
        }
        if i < self.own_start {
            return self.base.as_ref()?.get(i);
        }
        if i < self.blocks_start {
            let r = &self.runs[self.runs.partition_point(|r| r.end <= i)..]
                .first()
                .filter(|r| r.start <= i)?;
            let byte = usize::try_from((i - r.start) * 4 + u64::from(r.at)).ok()?;
            let c = r.hint.get(byte..byte + 4)?;
            return Some(Pos {
                seg: r.seg,
                off: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            });
        }
        let j = usize::try_from(i - self.blocks_start).ok()?;
        self.blocks.get(j / BLOCK)?.get(j % BLOCK).copied()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed, TestRunner};

    use super::*;

    /// Builds hints and positions side by side with a plain `Vec<Pos>` model.
    #[derive(Default)]
    struct Harness {
        hints: MappedHints,
        positions: Positions,
        model: Vec<Pos>,
        segs: u32,
    }

    impl Harness {
        /// A hint of a fresh segment holding `n` offsets after `pad` bytes of other data.
        fn run(&mut self, n: u32, pad: usize) {
            let seg = self.segs;
            self.segs += 1;
            let offsets: Vec<u32> = (0..n).map(|j| 1000 * seg + 7 * j).collect();
            let mut bytes = vec![0xAB; pad];
            for o in &offsets {
                bytes.extend_from_slice(&o.to_le_bytes());
            }
            self.hints.insert(seg, Mapping::from_vec(bytes));
            self.positions.push_run(&self.hints, seg, pad, u64::from(n));
            self.model
                .extend(offsets.iter().map(|&off| Pos { seg, off }));
        }

        fn push(&mut self, off: u32) {
            let pos = Pos { seg: 9999, off };
            self.positions.push(pos);
            self.model.push(pos);
        }

        fn truncate(&mut self, keep: u64) {
            self.positions.truncate(keep);
            self.model.truncate(keep as usize);
        }

        fn check(&self) -> Result<(), String> {
            let len = self.model.len() as u64;
            if self.positions.len() != len {
                return Err(format!("len {} != {len}", self.positions.len()));
            }
            for i in 0..len + 2 {
                let got = self.positions.get(&self.hints, i);
                if got != self.model.get(i as usize).copied() {
                    return Err(format!(
                        "position {i}: {got:?} != {:?}",
                        self.model.get(i as usize)
                    ));
                }
                for n in [0, 1, 2, 7, 33, u64::MAX - i] {
                    let snap = self.positions.snapshot(&self.hints, i, i.saturating_add(n));
                    let got: Vec<Pos> = snap.range().filter_map(|j| snap.get(j)).collect();
                    let want = self.model.get(i as usize..).unwrap_or(&[]);
                    let want = &want[..want.len().min(n as usize)];
                    if got != want {
                        return Err(format!("range {i}..+{n}: {got:?} != {want:?}"));
                    }
                }
            }
            let runs = &self.positions.own.runs;
            if runs.windows(2).any(|w| w[0].end >= w[1].end)
                || runs.first().is_some_and(|r| r.end == 0)
            {
                return Err(format!("run ends not increasing from 0: {runs:?}"));
            }
            Ok(())
        }
    }

    #[test]
    fn runs_then_owned_cut_at_every_point() {
        for keep in 0..=12 {
            let mut h = Harness::default();
            h.run(3, 88);
            h.run(1, 0);
            h.run(4, 5);
            h.push(1);
            h.push(2);
            h.push(3);
            h.push(4);
            h.check().unwrap();
            h.truncate(keep);
            h.check().unwrap();
            // Appends after the cut go after what was kept.
            h.push(50);
            h.check().unwrap();
            assert_eq!(h.positions.len(), keep.min(12) + 1);
        }
    }

    #[test]
    fn a_run_after_owned_positions_is_copied_in_order() {
        let mut h = Harness::default();
        h.run(2, 0);
        h.push(5);
        h.run(3, 16);
        assert_eq!(h.positions.own.runs.len(), 1);
        assert_eq!(h.positions.own.owned_len(), 4);
        h.check().unwrap();
        h.truncate(1);
        h.check().unwrap();
        h.run(2, 4);
        assert_eq!(
            h.positions.own.runs.len(),
            2,
            "owned is empty again: borrowed"
        );
        h.check().unwrap();
    }

    #[test]
    fn missing_hint_bytes_read_as_absent_not_a_panic() {
        let mut p = Positions::default();
        p.push_run(&MappedHints::default(), 3, 8, 2);
        let hints = MappedHints::default();
        assert_eq!(p.get(&hints, 0), None);
        let mut short = MappedHints::default();
        short.insert(3, Mapping::from_vec(vec![0; 10]));
        assert_eq!(p.get(&short, 0), None);
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn a_snapshot_keeps_what_it_saw_through_pops_truncations_and_appends() {
        let mut h = Harness::default();
        h.run(5, 3);
        for off in 0..600 {
            h.push(off);
        }
        let snap = h.positions.snapshot(&h.hints, 2, 600);
        let before: Vec<Pos> = snap.range().filter_map(|j| snap.get(j)).collect();
        assert_eq!(before, h.model[2..600]);
        h.truncate(300);
        for off in 1000..1400 {
            h.push(off);
        }
        h.truncate(1);
        h.check().unwrap();
        let after: Vec<Pos> = snap.range().filter_map(|j| snap.get(j)).collect();
        assert_eq!(after, before);
    }

    #[test]
    fn a_fork_keeps_its_prefix_through_every_change_to_its_source() {
        let mut h = Harness::default();
        h.run(5, 3);
        for off in 0..700 {
            h.push(off);
        }
        let fork = h.positions.fork(600);
        let want: Vec<Pos> = h.model[..600].to_vec();
        fn read(hints: &MappedHints, p: &Positions) -> Vec<Pos> {
            let snap = p.snapshot(hints, 0, u64::MAX);
            snap.range().filter_map(|j| snap.get(j)).collect()
        }
        assert_eq!(read(&h.hints, &fork), want);
        h.truncate(10);
        h.push(5000);
        h.truncate(0);
        h.push(6000);
        assert_eq!(
            read(&h.hints, &fork),
            want,
            "the source changed; the fork did not"
        );
        // A fork of a fork, cut and extended.
        let mut f2 = fork.fork(300);
        f2.push(Pos { seg: 77, off: 1 });
        f2.truncate(250);
        f2.push(Pos { seg: 77, off: 2 });
        let mut want2 = want[..250].to_vec();
        want2.push(Pos { seg: 77, off: 2 });
        assert_eq!(read(&h.hints, &f2), want2);
        assert_eq!(read(&h.hints, &fork), want);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Run(u32, usize),
        Push(u32),
        Truncate(u64),
        Pop(u64),
        /// Continue on a fork of the first `n` positions (the source is dropped).
        Fork(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..40, 0usize..9).prop_map(|(n, pad)| Op::Run(n, pad)),
            4 => any::<u32>().prop_map(Op::Push),
            1 => (0u64..120).prop_map(Op::Truncate),
            2 => (1u64..5).prop_map(Op::Pop),
            1 => (0u64..120).prop_map(Op::Fork),
        ]
    }

    #[test]
    fn matches_a_vec_model() {
        let seed = 0x0715_0005_u64;
        let config = Config {
            cases: 512,
            rng_seed: RngSeed::Fixed(seed),
            source_file: Some(file!()),
            ..Config::default()
        };
        let result = TestRunner::new(config).run(&proptest::collection::vec(op(), 0..60), |ops| {
            let mut h = Harness::default();
            for op in ops {
                match op {
                    Op::Run(n, pad) => h.run(n, pad),
                    Op::Push(off) => h.push(off),
                    Op::Truncate(keep) => h.truncate(keep),
                    Op::Pop(n) => h.truncate(h.model.len().saturating_sub(n as usize) as u64),
                    Op::Fork(n) => {
                        h.positions = h.positions.fork(n);
                        h.model.truncate(n as usize);
                    }
                }
                h.check().map_err(TestCaseError::fail)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}\n(proptest seed {seed:#x})");
        }
    }
}
