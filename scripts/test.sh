#!/usr/bin/env bash
# The whole test suite (what CI runs). Needs root for the end-to-end tests
# (network namespaces, TAP); as non-root they fail unless HVNET_SKIP_ROOT_TESTS=1.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "no_std builds of the protocol crates"
cargo build --profile ci -p vmbus -p nvsp -p rndis -p netpkt --no-default-features

step "unit, property, integration, cross-process stress and end-to-end tests"
cargo nextest run --workspace --cargo-profile ci --no-fail-fast

step "loom model of the ring's signalling rules"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
    cargo test --profile ci -p vmbus --test loom_ring

step "fuzz targets build"
for dir in crates/*/fuzz; do
    [ -f "$dir/Cargo.toml" ] || continue
    (cd "$dir" && RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=../../../target/fuzz cargo build --quiet)
    echo "built $dir"
done

step "all tests passed"
