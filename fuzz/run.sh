#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: `fuzz/run.sh SECONDS` (default 60 each).
#
# Builds the seed corpus first (make-corpus.py, from ../shared/testdata/vxlan), then runs
# `cargo +nightly fuzz run TARGET -- -max_total_time=SECONDS` for each target. Exits non-zero
# if any target crashes (a panic, an overflow, an ASan report, a timeout or running out of
# memory); the reproducer is in fuzz/artifacts/TARGET/, and
# `cargo +nightly fuzz fmt TARGET ARTIFACT` prints it. Prints a skip message and exits 0
# when the nightly toolchain or cargo-fuzz is not installed, so that CI without them passes.
set -uo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 SECONDS   (run each fuzz target for SECONDS seconds)" >&2
    exit 2
fi

cd "$(dirname "$0")"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: skipped: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: skipped: cargo-fuzz is not installed (cargo install cargo-fuzz)"
    exit 0
fi

if command -v python3 >/dev/null 2>&1; then
    python3 make-corpus.py || { echo "fuzz: make-corpus.py failed" >&2; exit 1; }
else
    echo "fuzz: no python3: starting from the corpus already in fuzz/corpus, if any" >&2
    mkdir -p corpus/vxlan_decap corpus/tunnel_roundtrip
fi

# Per-target libFuzzer flags. vxlan_decap's seeds include 80 KB BIG TCP frames: inputs are
# capped at 16 KiB (the GSO captures, up to 7 KB, stay whole; the BIG TCP ones keep their
# zero-length headers), which keeps mutation fast.
flags_for() {
    case "$1" in
        vxlan_decap) echo "-max_len=16384" ;;
        *) echo "" ;;
    esac
}

failed=()
for target in $(cargo +nightly fuzz list); do
    echo "fuzz: $target for ${seconds}s"
    # shellcheck disable=SC2046 # the flags are words on purpose
    if ! cargo +nightly fuzz run "$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 $(flags_for "$target"); then
        echo "fuzz: $target FAILED; reproducer in fuzz/artifacts/$target/" >&2
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: every target ran ${seconds}s without a crash"
