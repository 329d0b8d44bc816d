//! The append measurements: the fdatasync-bound ones (the raw floor, the group-commit floor,
//! durable appends of both engines) and buffered appends beside the machine's ceilings.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use convlog::Durability;

use crate::floor::Group;
use crate::workload::Workload;
use crate::{
    Args, BATCH, Log, Results, THREADS, ceilings, convlog_side, floor, median, rate, remove,
    sqlite, workload,
};

/// Ops/s accumulated over several slices of one measurement.
#[derive(Default, Clone, Copy)]
pub(crate) struct Acc {
    ops: u64,
    secs: f64,
    extra: f64,
}

impl Acc {
    pub(crate) fn add(&mut self, ops: u64, t: Duration) {
        self.ops += ops;
        self.secs += t.as_secs_f64();
    }

    pub(crate) fn rate(&self) -> Option<f64> {
        (self.secs > 0.0).then(|| self.ops as f64 / self.secs)
    }
}

/// The fdatasync-bound measurements: the raw floor and durable appends of both engines.
///
/// They are run in interleaved rounds (each measurement gets `duration / rounds` per round)
/// so that disk noise from other processes falls on all of them alike.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sync_bound(
    args: &Args,
    want: &dyn Fn(&str) -> bool,
    workload: &Workload,
    corpus: &Arc<workload::Corpus>,
    mean_len: f64,
    root: &Path,
    r: &mut Results,
    log: &Log,
) {
    let rounds: u32 = if args.quick { 1 } else { 3 };
    let slice = args.duration / rounds;
    // A typical record: a session's later records in a segment refer to the one naming it.
    let rec = mean_len.round() as usize + convlog::format::RECORD_HEADER_LEN;
    let names: Arc<Vec<Vec<String>>> = Arc::new(
        (0..8)
            .map(|t| {
                workload
                    .sessions
                    .iter()
                    .map(|s| format!("{s}-w{t}"))
                    .collect()
            })
            .collect(),
    );
    let (mut pre, mut grow, mut single) = (Acc::default(), Acc::default(), Acc::default());
    let mut conv = [Acc::default(); 3];
    // 8 threads: the group-commit floor, and convlog's group sizes and p99 latencies.
    let (mut floor8, mut conv8) = (Groups::default(), Groups::default());
    let mut group = [Acc::default(); 3];
    for round in 0..rounds {
        if want("floor") {
            let (n, t) = floor::write_sync_loop(&root.join("floor.prealloc"), rec, true, slice);
            pre.add(n, t);
            let (n, t) = floor::write_sync_loop(&root.join("floor.grow"), rec, false, slice);
            grow.add(n, t);
            let g = floor::group_commit_loop(&root.join("floor.group"), rec, GROUP_THREADS, slice);
            floor8.add(&g);
        }
        if !want("durable") {
            continue;
        }
        for (k, &threads) in THREADS.iter().enumerate() {
            let dir = root.join(format!("convlog-durable-{threads}-{round}"));
            let g = convlog_side::durable(&dir, names.clone(), corpus.clone(), threads, slice);
            conv[k].add(g.appends, g.elapsed);
            if threads == GROUP_THREADS {
                conv8.add(&g);
            }
            remove(&dir);
        }
        let dir = root.join(format!("sqlite-durable-1-{round}"));
        let (n, t) = sqlite::durable_single(&dir, args.schema, &names[0], corpus, slice);
        single.add(n, t);
        remove(&dir);
        for (k, &threads) in THREADS.iter().enumerate().skip(1) {
            let dir = root.join(format!("sqlite-group-{threads}-{round}"));
            let (n, t, per_commit) = sqlite::durable_group_commit(
                &dir,
                args.schema,
                names.clone(),
                corpus.clone(),
                threads,
                slice,
            );
            group[k].add(n, t);
            group[k].extra += per_commit / f64::from(rounds);
            remove(&dir);
        }
        log.say(format!("sync-bound round {}/{rounds} done", round + 1));
    }
    if want("floor") {
        r.floor_prealloc = pre.rate();
        r.floor_growing = grow.rate();
        r.group_floor = floor8.summary();
        log.say(format!(
            "floor ({rec} B records): preallocated {}, growing {}; {GROUP_THREADS} threads \
             sharing syncs {}",
            rate(r.floor_prealloc),
            rate(r.floor_growing),
            floor8.describe(),
        ));
    }
    if want("durable") {
        for (k, &threads) in THREADS.iter().enumerate() {
            r.conv_durable[k] = conv[k].rate();
            log.say(format!(
                "convlog durable, {threads} thread(s): {}",
                rate(r.conv_durable[k])
            ));
        }
        r.conv_group = conv8.summary();
        log.say(format!(
            "convlog durable, {GROUP_THREADS} threads: {}",
            conv8.describe()
        ));
        r.sql_durable_single = single.rate();
        log.say(format!(
            "sqlite FULL, 1 thread, 1 txn/append: {}",
            rate(r.sql_durable_single)
        ));
        for (k, &threads) in THREADS.iter().enumerate().skip(1) {
            r.sql_group[k] = group[k].rate().map(|g| (g, group[k].extra));
            log.say(format!(
                "sqlite FULL group commit, {threads} threads: {} ({:.1} appends/commit)",
                rate(r.sql_group[k].map(|g| g.0)),
                group[k].extra
            ));
        }
    }
}

/// Buffered appends of the whole workload into fresh stores: convlog one message per call,
/// SQLite 1000 per transaction, convlog one session's batch per call; in interleaved rounds
/// (3, or 1 with `--quick`), each side's median kept, so that disk writeback from one run
/// falls on all of them alike.
pub(crate) fn buffered_rounds(
    args: &Args,
    workload: &Workload,
    corpus: &workload::Corpus,
    root: &Path,
    r: &mut Results,
    log: &Log,
) {
    let rounds = if args.quick { 1 } else { 3 };
    let per_sec = |t: Duration| corpus.len() as f64 / t.as_secs_f64();
    let (mut each, mut sql, mut batch) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu, mut cache, mut cache_bytes) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let dir = root.join("convlog-each");
        let store = convlog_side::open(&dir, Durability::Buffered);
        each.push(per_sec(convlog_side::append_each(
            &store,
            &workload.sessions,
            corpus,
        )));
        drop(store);
        remove(&dir);
        let dir = root.join("sqlite-batch");
        let mut app = sqlite::Appender::new(
            sqlite::open(&dir, args.schema, sqlite::Sync::Normal).expect("open sqlite"),
        );
        sql.push(per_sec(sqlite::append_batched(
            &mut app,
            &workload.sessions,
            corpus,
            BATCH,
        )));
        drop(app);
        remove(&dir);
        let dir = root.join("convlog-batch");
        let store = convlog_side::open(&dir, Durability::Buffered);
        batch.push(per_sec(convlog_side::append_batched(
            &store,
            &workload.sessions,
            corpus,
            BATCH,
        )));
        drop(store);
        remove(&dir);
        cpu.push(ceilings::cpu(corpus, &workload.sessions));
        let (n, b) = ceilings::page_cache(corpus, &workload.sessions, &root.join("ceiling.b"));
        cache.push(n);
        cache_bytes.push(b);
        log.say(format!(
            "buffered round {round}/{rounds}: convlog append_raw {}, sqlite NORMAL {BATCH} \
             appends/txn {}, convlog append_batch_raw({BATCH}) {}; ceilings: (a) CPU {}, \
             (b) page cache {} ({:.0} MB/s)",
            rate(each.last().copied()),
            rate(sql.last().copied()),
            rate(batch.last().copied()),
            rate(cpu.last().copied()),
            rate(cache.last().copied()),
            b / 1e6,
        ));
    }
    r.conv_each = Some(median(each));
    r.sql_batched = Some(median(sql));
    r.conv_batch = Some(median(batch));
    r.ceilings = Some(ceilings::Ceilings {
        cpu: median(cpu),
        page_cache: median(cache),
        page_cache_bytes: median(cache_bytes),
    });
}

/// The writers of the group-commit lines.
pub(crate) const GROUP_THREADS: usize = 8;

/// Group-commit runs summed over rounds, each round's p99 kept.
#[derive(Default)]
struct Groups {
    appends: u64,
    secs: f64,
    syncs: u64,
    p99: Vec<f64>,
}

/// A group-commit line: appends per second, appends per sync, p99 latency (median round).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GroupLine {
    pub rate: f64,
    pub group: f64,
    pub p99: f64,
}

impl Groups {
    fn add(&mut self, g: &Group) {
        self.appends += g.appends;
        self.secs += g.elapsed.as_secs_f64();
        self.syncs += g.syncs;
        self.p99.push(g.p99);
    }

    fn summary(&self) -> Option<GroupLine> {
        (self.secs > 0.0 && self.syncs > 0).then(|| GroupLine {
            rate: self.appends as f64 / self.secs,
            group: self.appends as f64 / self.syncs as f64,
            p99: median(self.p99.clone()),
        })
    }

    fn describe(&self) -> String {
        self.summary().map_or("skipped".into(), |g| {
            format!(
                "{}, {:.1} appends/sync, p99 {:.2} ms",
                rate(Some(g.rate)),
                g.group,
                g.p99 * 1e3
            )
        })
    }
}
