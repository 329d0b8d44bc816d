//! `convlog`: look into a convlog store and move conversations in and out of it.
//!
//! One module per subcommand under `cmd/`; each exposes `Args` (clap) and
//! `run(args) -> Result<(), CliError>`. Errors print as one line, `convlog: <what and where>`,
//! and exit with status 1 (2 for usage errors, which clap reports itself).

mod cmd;
mod error;
mod jsonl;
mod keys;
mod perms;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::CliError;

/// An embedded, event-sourced, append-only store for LLM agent conversations.
#[derive(Debug, Parser)]
#[command(name = "convlog", version, about, long_about = None)]
#[command(propagate_version = true, disable_help_subcommand = true)]
struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate agents chatting, store their conversations, reopen and report.
    Demo(cmd::demo::Args),
    /// List the sessions of a store.
    Sessions(cmd::sessions::Args),
    /// Print a session's messages as JSONL, one message per line.
    Cat(cmd::cat::Args),
    /// Print the last messages of a session as JSONL.
    Tail(cmd::tail::Args),
    /// The longest recent history within a budget that never splits a tool call from its
    /// result (JSONL).
    Window(cmd::window::Args),
    /// Print counters about a store.
    Stats(cmd::stats::Args),
    /// Append one message (JSON argument) or many (JSONL on stdin) to a session.
    ///
    /// From stdin, each line is appended as soon as it arrives and its receipt printed at
    /// once, one line per message: `appended to "SESSION": interaction N, LSN L`. A printed
    /// receipt means the message is in the store (it survives a kill of this process). An
    /// invalid line stops the command with exit status 1, naming the line; the messages
    /// before it stay appended. `--batch` (and `--key`) read all of stdin first and append
    /// all of it or nothing.
    Append(cmd::append::Args),
    /// Remove a session's last message and print it.
    Pop(cmd::pop::Args),
    /// Print or set a session's metadata (a JSON object).
    Meta(cmd::meta::Args),
    /// Start a new session as another's first messages, sharing them (O(1)).
    Fork(cmd::fork::Args),
    /// Make a session exactly the JSONL on stdin, atomically.
    Replace(cmd::replace::Args),
    /// Keep only a session's first KEEP messages.
    Truncate(cmd::truncate::Args),
    /// Remove every message of a session.
    Clear(cmd::clear::Args),
    /// Delete sessions: their messages, keys and metadata (`-` reads ids from stdin).
    Delete(cmd::delete::Args),
    /// Reclaim the space of removed messages: rewrite the sealed segments keeping only what
    /// a live session can reach; report the sessions erased.
    Compact(cmd::compact::Args),
    /// Check every record, checksum and the LSN chain; exit 0 only when clean.
    Verify(cmd::verify::Args),
    /// Salvage a damaged store: keep every valid record, set damaged bytes aside.
    Repair(cmd::repair::Args),
    /// Import messages or whole conversations from a JSONL file.
    ///
    /// Resumable: each batch is atomic and goes in under a key derived from its lines, so a
    /// kill mid-import leaves whole batches (never half of one), and running the same import
    /// again appends only what is missing, without duplicates; its summary says how many
    /// messages it skipped as already imported. This holds for the same lines at the same
    /// line numbers (also a file that grew since, if the earlier one ended at a multiple of
    /// 1,000 lines).
    Import(cmd::import::Args),
    /// Export messages as JSONL, one `{"session", "message"}` object per line.
    Export(cmd::export::Args),
    /// Write a new random master key to a new file (64 hex digits, mode 0600).
    ///
    /// Every command that opens a store takes the key's file with `--key-file PATH` (or the
    /// environment variable CONVLOG_KEY_FILE): a new store is then created encrypted, and an
    /// encrypted store opens only with its key. The key itself is never an argument.
    Keygen(cmd::keygen::Args),
    /// Wrap every data key of an encrypted store under a new master key, without rewriting
    /// any segment; crash-atomic (one rename replaces KEYS).
    Rekey(cmd::rekey::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::Sessions(a) => cmd::sessions::run(a),
        Command::Cat(a) => cmd::cat::run(a),
        Command::Tail(a) => cmd::tail::run(a),
        Command::Window(a) => cmd::window::run(a),
        Command::Replace(a) => cmd::replace::run(a),
        Command::Fork(a) => cmd::fork::run(a),
        Command::Meta(a) => cmd::meta::run(a),
        Command::Stats(a) => cmd::stats::run(a),
        Command::Append(a) => cmd::append::run(a),
        Command::Pop(a) => cmd::pop::run(a),
        Command::Truncate(a) => cmd::truncate::run(a),
        Command::Clear(a) => cmd::clear::run(a),
        Command::Delete(a) => cmd::delete::run(a),
        Command::Compact(a) => cmd::compact::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Repair(a) => cmd::repair::run(a),
        Command::Import(a) => cmd::import::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Keygen(a) => cmd::keygen::run(a),
        Command::Rekey(a) => cmd::rekey::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`convlog cat ... | head`): stop quietly.
        Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("convlog: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
