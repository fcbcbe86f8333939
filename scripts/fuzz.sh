#!/usr/bin/env bash
# Fuzzes the core with cargo-fuzz (libFuzzer): the reply parser, the whole
# session, the envelope block of queue files, a domain's .backoff file, the
# MTA-STS policy response and parser, the DANE matcher, the TLS report
# journal.
# Installs cargo-fuzz when it is missing. The targets need nightly compiler
# features (sanitizers, -Z flags); on a stable toolchain RUSTC_BOOTSTRAP=1
# unlocks them for this build only.
#
#   scripts/fuzz.sh                  reply_parser 60 s, the others 30 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh reply_parser 300 s, the others 150 s
#   scripts/fuzz.sh reply_parser     one target, FUZZ_SECONDS (default 60)
#
# A crash fails the script; its input is saved under fuzz/artifacts/<target>/
# and replays with `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`.
set -euo pipefail

cd "$(dirname "$0")/.."

SECONDS_MAIN="${FUZZ_SECONDS:-60}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "scripts/fuzz.sh: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

run_target() {
    local target="$1" seconds="$2"
    mkdir -p "fuzz/corpus/$target"
    echo "scripts/fuzz.sh: fuzzing $target for ${seconds}s" >&2
    # -max_len keeps inputs about the size of a few replies; the parser's
    # caps (2048-octet lines, 128 lines) are still reachable.
    cargo fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -max_len=8192 -print_final_stats=1
}

if [ "$#" -gt 0 ]; then
    for target in "$@"; do
        run_target "$target" "$SECONDS_MAIN"
    done
else
    run_target reply_parser "$SECONDS_MAIN"
    run_target session "$((SECONDS_MAIN / 2))"
    run_target envelope "$((SECONDS_MAIN / 2))"
    run_target backoff "$((SECONDS_MAIN / 2))"
    run_target mta_sts "$((SECONDS_MAIN / 2))"
    run_target dane "$((SECONDS_MAIN / 2))"
    run_target tlsrpt_journal "$((SECONDS_MAIN / 2))"
fi
echo "scripts/fuzz.sh: no crash" >&2
