//! One module per subcommand; each has clap `Args` and `run(args) -> CliResult`.

pub mod append;
pub mod cat;
pub mod clear;
pub mod compact;
pub mod delete;
pub mod demo;
pub mod export;
pub mod fork;
pub mod import;
pub mod keygen;
pub mod meta;
pub mod pop;
pub mod rekey;
pub mod repair;
pub mod replace;
pub mod sessions;
pub mod stats;
pub mod tail;
pub mod truncate;
pub mod verify;
pub mod window;
