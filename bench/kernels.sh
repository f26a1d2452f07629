#!/usr/bin/env bash
# WASM against native for the guest kernels, with fuel metering on and off,
# and the render job's speed-up from 1 to 2 sandboxes. Prints a Markdown table.
#
#   bash bench/kernels.sh            (REPS=3 by default; best of REPS is kept)
#
# The same Rust source (workloads/) is built natively and for wasm32-wasip1;
# WASM times are the sandbox's own run time (instantiation + execution, the
# module compiled and cached beforehand), native times the whole process.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS="${REPS:-3}"
export PLEXUS_DATA_DIR="${PLEXUS_DATA_DIR:-$(mktemp -d)}"

cargo build --release -q
(cd workloads && cargo build --release -q)
PLEXUS=target/release/plexus
NATIVE=workloads/target/release
SCENE="$PWD/examples/scenes/demo.gltf"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

best_native() { # command...
    local best=999999999
    for _ in $(seq "$REPS"); do
        local t0; t0=$(now_ms); "$@" >/dev/null; local t=$(( $(now_ms) - t0 ))
        (( t < best )) && best=$t
    done
    echo "$best"
}

best_wasm() { # exec-flags -- args
    local best=999999999
    "$PLEXUS" exec "$@" >/dev/null 2>&1 || true # compile and cache
    for _ in $(seq "$REPS"); do
        local t; t=$("$PLEXUS" exec --json "$@" | python3 -c 'import json,sys; print(json.load(sys.stdin)["report"]["run_ms"])')
        (( t < best )) && best=$t
    done
    echo "$best"
}

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }

MANDEL_ARGS=(--per-side 1 --tile 0)
RENDER_ARGS=(--width 1280 --height 720 --x 480 --y 270 --tile-width 320 --tile-height 180 --spp 16 --max-depth 6)

m_native=$(best_native "$NATIVE/mandelbrot" "${MANDEL_ARGS[@]}" --out "$TMP/m.tile")
m_fuel=$(best_wasm builtin:mandelbrot -- "${MANDEL_ARGS[@]}")
m_off=$(best_wasm builtin:mandelbrot --no-fuel -- "${MANDEL_ARGS[@]}")
r_native=$(best_native "$NATIVE/render" --scene "$SCENE" "${RENDER_ARGS[@]}" --out "$TMP/r.tile")
r_fuel=$(best_wasm builtin:render --input "$SCENE:scene.gltf" -- --scene /in/scene.gltf "${RENDER_ARGS[@]}")
r_off=$(best_wasm builtin:render --no-fuel --input "$SCENE:scene.gltf" -- --scene /in/scene.gltf "${RENDER_ARGS[@]}")

job_s() { "$PLEXUS" run examples/render.toml --out "$TMP/job$1" --jobs "$1" --json --quiet | python3 -c 'import json,sys; print(json.load(sys.stdin)["wall_s"])'; }
j1=$(job_s 1)
j2=$(job_s 2)

echo "| kernel | native ms | WASM, fuel ms | ratio | WASM, no fuel ms | ratio |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
echo "| mandelbrot 1024² (one task) | $m_native | $m_fuel | $(ratio "$m_fuel" "$m_native") | $m_off | $(ratio "$m_off" "$m_native") |"
echo "| render 320×180 tile, 16 spp | $r_native | $r_fuel | $(ratio "$r_fuel" "$r_native") | $r_off | $(ratio "$r_off" "$r_native") |"
echo
echo "| render job (examples/render.toml, 64 tasks) | wall s |"
echo "| --- | ---: |"
echo "| --jobs 1 | $(printf %.1f "$j1") |"
echo "| --jobs 2 | $(printf %.1f "$j2") |"
echo "| speed-up | $(ratio "$j1" "$j2")× |"
