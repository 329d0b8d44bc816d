//! Opens a store N times read-only and reports the mean open time (a profiling aid:
//! `cargo run --release --example reopen_probe DIR [N]`).
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: reopen_probe DIR [N]")?;
    let n: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(200);
    let started = Instant::now();
    for _ in 0..n {
        let store = convlog::Store::builder().read_only(true).open(&dir)?;
        std::hint::black_box(store.stats());
    }
    println!("{:?} per open", started.elapsed() / n);
    Ok(())
}
