//! `convlog demo`: simulates several agents holding realistic conversations, appends them
//! to a fresh store, reopens it and reports throughput, open time, a tail read and the
//! recovery report.
//!
//! Conversations are generated from a seeded PRNG before the clock starts: a system prompt,
//! user turns, assistant turns, tool calls with their results, of skewed sizes (most short,
//! a few long), and sessions of Zipf-skewed lengths. Agents append from their own threads,
//! each interleaving its sessions; now and then an agent regenerates its last answer (a pop
//! and a new append).

mod corpus;
mod dir;

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use convlog::{ChatMessage, Durability, RecoveryReport, Role, SessionInfo, Store};

use crate::error::{CliError, CliResult, InStore};
use corpus::{Conversation, Op, conversation, schedule, zipf_sizes};
use dir::recreate;

/// Arguments of `convlog demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory. Missing or empty: created. Holding a store an earlier demo wrote:
    /// replaced. Holding any other store: refused unless --force. Holding anything that is
    /// not a store's: always refused.
    #[arg(long, default_value = "convlog-demo")]
    pub dir: PathBuf,
    /// Replace the store in --dir even if the demo did not write it (its data is deleted).
    #[arg(long)]
    pub force: bool,
    /// Number of conversations.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub sessions: u64,
    /// Total number of messages over all conversations (at least one per session; they are
    /// generated in memory before the clock starts, so at most 1,000,000).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub messages: u64,
    /// Number of agents appending concurrently, each from its own thread.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub agents: u64,
    /// When an append is durable.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Buffered)]
    pub durability: DurabilityArg,
    /// Seed of the conversation generator (same seed, same conversations).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The size at which a segment is sealed and the next one started, in bytes, or with a
    /// suffix: 64K, 16M, 1G (4K to 1G; default 64M).
    #[arg(long, value_name = "BYTES", value_parser = crate::util::parse_segment_size)]
    pub segment_size: Option<u64>,
    #[command(flatten)]
    pub mode: crate::perms::ModeArg,
}

/// `--durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// Every append is fsynced before it returns (concurrent appends share fsyncs).
    Always,
    /// Appends reach the OS at once and the disk at the next sync (here: at the end).
    Buffered,
}

/// What an agent does next.
use crate::util::{
    disk_bytes, human_bytes, human_duration, kinds, open_error, plural, recovery_summary,
    thousands, torn_tail,
};
/// Runs the demo.
pub fn run(args: Args) -> CliResult {
    check_args(&args)?;
    let previous = recreate(&args.dir, args.force, args.mode.permissions())?;
    let agents = args.agents.min(args.sessions) as usize;
    let work = Workload::generate(&args, agents);

    let mut out = format!(
        "convlog demo: {} agents, {} conversations, {} messages (seed {}), durability {}\n\
         store {} ({}); conversations generated in {}\n\n",
        agents,
        thousands(args.sessions),
        thousands(args.messages),
        args.seed,
        format!("{:?}", args.durability).to_lowercase(),
        args.dir.display(),
        previous,
        human_duration(work.generated_in),
    );
    let written = write(&args, &work, &mut out)?;
    let opened = Instant::now();
    let store = Store::open(&args.dir).in_store(&args.dir)?;
    let open_time = opened.elapsed();
    out.push_str(&reopened(&args.dir, &store, open_time, &written)?);
    let longest = store.sessions().into_iter().max_by_key(|s| s.count);
    if let Some(longest) = &longest {
        out.push_str(&tail(&args.dir, &store, longest)?);
    }
    out.push_str(&scan(&args.dir, &store)?);
    out.push_str(&recovery_report(store.recovery_report()));
    out.push_str(&next_steps(
        &args.dir,
        longest.as_ref().map(|s| s.id.as_str()),
    ));
    let mut stdout = crate::util::Out::stdout();
    stdout.text(&out)?;
    stdout.finish()
}

/// What [`clap`] does not check: enough messages for the sessions, and the segment size
/// (before the old demo store is deleted; the library checks it again).
fn check_args(args: &Args) -> CliResult {
    if args.messages < args.sessions {
        return Err(CliError::Input(format!(
            "--messages {} is fewer than --sessions {}: every session needs a message",
            args.messages, args.sessions
        )));
    }
    Ok(())
}

/// The conversations and each agent's schedule, generated before the clock starts.
struct Workload {
    conversations: Vec<Conversation>,
    /// Each agent's (conversation, op) indices, in order.
    schedules: Vec<Vec<(usize, usize)>>,
    /// Bytes of the appended messages' JSON.
    json_bytes: u64,
    appends: u64,
    pops: u64,
    generated_in: Duration,
}

impl Workload {
    fn generate(args: &Args, agents: usize) -> Workload {
        let started = Instant::now();
        let sizes = zipf_sizes(args.sessions as usize, args.messages, 1.1);
        let conversations: Vec<Conversation> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| conversation(args.seed, i, agents, n))
            .collect();
        let ops = || conversations.iter().flat_map(|c| &c.ops);
        let json_bytes = ops()
            .map(|op| match op {
                Op::Append(m) => serde_json::to_vec(m).map_or(0, |v| v.len() as u64),
                Op::Pop => 0,
            })
            .sum();
        let appends = ops().filter(|op| matches!(op, Op::Append(_))).count() as u64;
        let pops = ops().filter(|op| matches!(op, Op::Pop)).count() as u64;
        let schedules = schedule(&conversations, agents, args.seed);
        Workload {
            conversations,
            schedules,
            json_bytes,
            appends,
            pops,
            generated_in: started.elapsed(),
        }
    }
}

/// What the write phase leaves for the reopen's line.
struct Written {
    sessions: usize,
    messages: u64,
}

/// The agents append the workload, each from its own thread, then the store is synced and
/// closed; the `append` lines go to `out`.
fn write(args: &Args, work: &Workload, out: &mut String) -> CliResult<Written> {
    let durability = match args.durability {
        DurabilityArg::Always => Durability::Always,
        DurabilityArg::Buffered => Durability::Buffered,
    };
    let mut builder = Store::builder()
        .durability(durability)
        .permissions(args.mode.permissions());
    if let Some(bytes) = args.segment_size {
        builder = builder.segment_size(bytes);
    }
    let store = builder
        .open(&args.dir)
        .map_err(|e| open_error(&args.dir, e, None))?;
    let barrier = Barrier::new(work.schedules.len() + 1);
    let (elapsed, latencies) = std::thread::scope(|scope| -> CliResult<_> {
        let handles: Vec<_> = work
            .schedules
            .iter()
            .map(|ops| {
                let (store, barrier) = (&store, &barrier);
                let conversations = &work.conversations;
                scope.spawn(move || agent(store, barrier, conversations, ops))
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let mut latencies = Vec::with_capacity(work.appends as usize);
        for h in handles {
            let lat = h
                .join()
                .map_err(|_| CliError::Message("an agent thread panicked".into()))??;
            latencies.extend(lat);
        }
        Ok((started.elapsed(), latencies))
    })?;
    let synced = Instant::now();
    store.sync().in_store(&args.dir)?;
    let synced = synced.elapsed();
    let stats = store.stats();
    // Closing trims the active segment's preallocated space: the size on disk is counted
    // after the reopen, as `convlog stats` counts it.
    drop(store);

    let secs = elapsed.as_secs_f64().max(1e-9);
    let (p50, p99, max) = percentiles(latencies);
    out.push_str(&format!(
        "append   {} and {} in {}: {} appends/s, {}/s of JSON ({})\n\
         \x20        latency p50 {}, p99 {}, max {}; final sync {}\n",
        plural(work.appends, "append"),
        plural(work.pops, "pop"),
        human_duration(elapsed),
        thousands((work.appends as f64 / secs) as u64),
        human_bytes((work.json_bytes as f64 / secs) as u64),
        human_bytes(work.json_bytes),
        human_duration(p50),
        human_duration(p99),
        human_duration(max),
        human_duration(synced),
    ));
    Ok(Written {
        sessions: stats.sessions,
        messages: stats.messages,
    })
}

/// The `on disk` and `reopen` lines, of the store just reopened (in `open_time`).
fn reopened(
    dir: &Path,
    store: &Store,
    open_time: Duration,
    written: &Written,
) -> CliResult<String> {
    let report = store.recovery_report();
    let segments = store.stats().segments;
    Ok(format!(
        "on disk  {}, {} for {}, {}\n\
         reopen   {} ({}; {})\n",
        plural(segments as u64, "segment"),
        human_bytes(disk_bytes(store)?),
        plural(written.sessions as u64, "session"),
        plural(written.messages, "message"),
        human_duration(open_time),
        plural(report.records, "record"),
        recovery_summary(report, segments, dir),
    ))
}

/// The `tail` lines: the last 20 messages of the longest session read, the last 5 shown.
fn tail(dir: &Path, store: &Store, longest: &SessionInfo) -> CliResult<String> {
    let started = Instant::now();
    let tail: Vec<_> = store
        .tail(&longest.id, 20)
        .collect::<convlog::Result<_>>()
        .in_store(dir)?;
    let latency = started.elapsed();
    let mut out = format!(
        "tail     last {} of {} ({}) in {}:\n",
        tail.len(),
        longest.id,
        plural(longest.count, "message"),
        human_duration(latency),
    );
    for e in tail.iter().skip(tail.len().saturating_sub(5)) {
        out.push_str(&format!(
            "           #{:<5} {:<9} {}\n",
            e.interaction_id,
            e.message.role().map_or("-", Role::as_str),
            preview(&e.message)
        ));
    }
    Ok(out)
}

/// The `scan` line: every message of every session read back, raw.
fn scan(dir: &Path, store: &Store) -> CliResult<String> {
    let started = Instant::now();
    let (mut read, mut read_bytes) = (0u64, 0u64);
    for s in store.sessions() {
        for e in store.messages(&s.id).raw() {
            read += 1;
            read_bytes += e.in_store(dir)?.message.len() as u64;
        }
    }
    let scan = started.elapsed();
    Ok(format!(
        "scan     {}, {} in {} ({}/s)\n\n",
        plural(read, "message"),
        human_bytes(read_bytes),
        human_duration(scan),
        human_bytes((read_bytes as f64 / scan.as_secs_f64().max(1e-9)) as u64),
    ))
}

/// The reopen's recovery report, field by field.
fn recovery_report(report: &RecoveryReport) -> String {
    format!(
        "recovery report\n\
         \x20 classification    {}\n\
         \x20 segments          {} ({} from hint files)\n\
         \x20 records           {} ({})\n\
         \x20 bytes scanned     {}\n\
         \x20 last LSN          {}\n\
         \x20 torn tail         {}\n\
         \x20 dropped           {}\n\
         \x20 duration          {}\n\n",
        report.classification(),
        report.segments_scanned,
        report.hints_used,
        thousands(report.records),
        kinds(&report.records_by_kind),
        human_bytes(report.bytes_scanned),
        report.last_lsn,
        report.torn_tail.as_ref().map_or("none".into(), torn_tail),
        if report.dropped.is_empty() {
            "none".to_owned()
        } else {
            format!("{} ranges", report.dropped.len())
        },
        human_duration(report.duration),
    )
}

/// The `next:` lines: commands to try on the store, spelled the way this binary was run:
/// through `cargo run` when it lives in a cargo target directory (`target/release`,
/// `target/debug`), as `convlog` once installed.
fn next_steps(dir: &Path, session: Option<&str>) -> String {
    let exe = std::env::current_exe().ok();
    let profile = exe
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|n| n.to_str());
    let (run, installed) = match profile {
        Some("release") => ("cargo run --release --", false),
        Some("debug") => ("cargo run --", false),
        _ => ("convlog", true),
    };
    let dir = shell_word(&dir.to_string_lossy());
    let mut commands = vec![format!("{run} sessions {dir} --sort count --reverse")];
    if let Some(session) = session {
        commands.push(format!("{run} tail {dir} {} -n 5", shell_word(session)));
    }
    commands.push(format!("{run} verify {dir}"));
    let mut text = String::new();
    for (i, c) in commands.iter().enumerate() {
        text.push_str(if i == 0 { "next: " } else { "      " });
        text.push_str(c);
        text.push('\n');
    }
    if !installed {
        text.push_str("      (after `cargo install --locked --path .`, as `convlog ...`)\n");
    }
    text
}

/// `word` as one shell word: as it is when that is safe, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// One agent: waits for the start, then runs its schedule; returns each append's latency.
fn agent(
    store: &Store,
    barrier: &Barrier,
    conversations: &[Conversation],
    ops: &[(usize, usize)],
) -> CliResult<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(ops.len());
    barrier.wait();
    for &(c, i) in ops {
        let conv = &conversations[c];
        let started = Instant::now();
        match &conv.ops[i] {
            Op::Append(m) => {
                store.append(&conv.id, m).in_store(store.path())?;
                latencies.push(started.elapsed());
            }
            Op::Pop => {
                store.pop_raw(&conv.id).in_store(store.path())?;
            }
        }
    }
    Ok(latencies)
}

/// p50, p99 and max.
fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    if v.is_empty() {
        return Default::default();
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), at(1.0))
}

/// A one-line preview of a message.
fn preview(m: &ChatMessage) -> String {
    if let Some(calls) = &m.tool_calls {
        let names: Vec<String> = calls
            .iter()
            .map(|c| format!("{}(…)", c.function.name))
            .collect();
        return format!("calls {}", names.join(", "));
    }
    let text = m.text().unwrap_or("");
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(60)
        .collect();
    let more = if text.chars().count() > 60 { "…" } else { "" };
    format!("\"{flat}{more}\" ({} bytes)", text.len())
}

/// The file the demo writes into its store directory, so that a later run knows the store
/// there is the demo's own to replace.
#[cfg(test)]
mod tests {
    use super::corpus::*;
    use super::dir::is_store_file;
    use super::*;

    #[test]
    fn zipf_sizes_sum_to_total_and_are_skewed() {
        let sizes = zipf_sizes(50, 20_000, 1.1);
        assert_eq!(sizes.iter().sum::<u64>(), 20_000);
        assert!(sizes.iter().all(|&n| n >= 1));
        assert!(sizes[0] > 10 * sizes[49]);
        assert_eq!(zipf_sizes(3, 3, 1.1), vec![1, 1, 1]);
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("convlog-demo"), "convlog-demo");
        assert_eq!(shell_word("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn only_store_files_may_be_deleted() {
        assert!(is_store_file("00000000000000000001.seg"));
        assert!(is_store_file("00000000000000000001.hint"));
        assert!(is_store_file("00000000000000000001.hint.tmp"));
        assert!(is_store_file("LOCK"));
        // What a compaction, an encrypted store and an atomic replace leave.
        for name in [
            "COMPACT",
            "KEYS",
            "KEYS.tmp",
            "00000000000000000001.compact",
            "00000000000000000001-00ff00ff00ff00ff.hint.tmp",
        ] {
            assert!(is_store_file(name), "{name}");
        }
        assert!(!is_store_file("00000000000000000001-00ff.hint.tmp"));
        assert!(!is_store_file("KEYS.bak"));
        assert!(!is_store_file("notes.txt"));
        assert!(!is_store_file("0000000000000000001.seg"));
        assert!(!is_store_file("00000000000000000001."));
        assert!(!is_store_file("00000000000000000001"));
        assert!(!is_store_file("00000000000000000001.rs~"));
        assert!(!is_store_file("é0000000000000000001.seg"));
    }

    #[test]
    fn conversations_have_exactly_n_appends_and_schedules_cover_every_op() {
        let convs: Vec<Conversation> = (0..7)
            .map(|c| conversation(9, c, 3, 40 + c as u64))
            .collect();
        for (c, conv) in convs.iter().enumerate() {
            let appends = conv
                .ops
                .iter()
                .filter(|o| matches!(o, Op::Append(_)))
                .count();
            let pops = conv.ops.iter().filter(|o| matches!(o, Op::Pop)).count();
            assert_eq!((appends - pops) as u64, 40 + c as u64);
        }
        let plan = schedule(&convs, 3, 9);
        let total: usize = plan.iter().map(Vec::len).sum();
        assert_eq!(total, convs.iter().map(|c| c.ops.len()).sum::<usize>());
        // Each conversation's ops run in order.
        for agent in &plan {
            for c in 0..convs.len() {
                let mine: Vec<usize> = agent.iter().filter(|x| x.0 == c).map(|x| x.1).collect();
                assert!(mine.windows(2).all(|w| w[0] + 1 == w[1]));
            }
        }
    }
}
