#!/usr/bin/env bash
# Runs every cargo-fuzz target of convlog for SECONDS each (default 60), then prints each
# target's executions and executions per second. Exit status 1 if any target found a crash
# (the input is kept under fuzz/artifacts/<target>/; turn it into a regression test in tests/).
#
#   fuzz/run.sh [SECONDS]
#
# Needs a nightly toolchain and cargo-fuzz; without nightly it says so and exits 0 (a skip),
# and it installs cargo-fuzz from crates.io when it is missing.
#
# Notes:
# - Targets are built without a sanitizer (`-s none`): convlog is safe Rust (of its two `unsafe`
#   blocks one maps files, which the simulated file system the targets use never does, and
#   one registers a fork handler that only stores the process id), so
#   AddressSanitizer would find nothing and costs most of the throughput; panics, aborts,
#   timeouts and memory blow-ups are what the targets look for.
# - `-rss_limit_mb=256` (1024 for ops_crash, whose harness holds simulated file systems): a
#   target that needs more memory than that fails (DESIGN §5: open never allocates without
#   bound).
# - New inputs go to fuzz/target/run-corpus/<target> (not committed); the checked-in seeds in
#   fuzz/corpus/<target> are only read. Regenerate seeds with
#   `cargo run --manifest-path fuzz/corpus-gen/Cargo.toml`.
set -uo pipefail
secs="${1:-60}"
cd "$(dirname "$0")"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz: SKIPPED: no nightly toolchain (cargo-fuzz needs one: rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz is missing: installing it from crates.io"
    if ! cargo install cargo-fuzz --locked >/dev/null 2>&1 && ! cargo install cargo-fuzz; then
        echo "fuzz: SKIPPED: cargo-fuzz could not be installed"
        exit 0
    fi
fi

echo "fuzz: building the targets (nightly, release, no sanitizer)"
if ! cargo +nightly fuzz build -s none; then
    echo "fuzz: FAILED: the targets do not build"
    exit 1
fi

status=0
total=0
for t in $(cargo +nightly fuzz list); do
    mkdir -p "target/run-corpus/$t"
    log="target/fuzz-$t.log"
    # ops_crash holds whole simulated file systems (written and durable copies of every
    # segment, preallocated space included) and the model's history: give it room; the
    # others get the 256 MB the design allows an open.
    rss=256
    [ "$t" = ops_crash ] && rss=1024
    cargo +nightly fuzz run -s none "$t" "target/run-corpus/$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb="$rss" -timeout=30 -print_final_stats=1 \
        >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
    if [ "$rc" -eq 0 ]; then
        echo "fuzz: $t: ok: ${execs:-?} execs in ${secs}s (${rate:-?} execs/s, peak RSS ${peak:-?} MB of ${rss})"
        total=$((total + ${execs:-0}))
    else
        echo "fuzz: $t: FAILED (exit $rc) after ${execs:-?} execs; the end of its log:"
        grep -v '^#[0-9]' "$log" | tail -60
        echo "fuzz: $t: crashing inputs:"
        ls -l "artifacts/$t" 2>/dev/null
        status=1
    fi
done
echo "fuzz: $total executions in all"
exit $status
