#!/usr/bin/env bash
# The device calls of the Dynamic VRAM / real-time server bench (BENCHMARKS.md "Dynamic VRAM and the real-time
# server"). Run from the repository root on the device: bench/device/run_realtime_device.sh PAYLOAD STAGE
#   inprocess: bench_dynamic_vram.py on 0.33.0 (Dynamic VRAM on, then --disable-dynamic-vram) and on 0.8.0
#   server:    bench_server_realtime.py on 0.33.0, one main.py per config (default, no-dynamic, no-cuda-malloc,
#              native-static)
#   dynamic:   bench_dynamic_vram.py on 0.33.0 with Dynamic VRAM started as main.py does (SD1.5, SDXL), and
#              SDXL with --disable-dynamic-vram
#   sdxl:      bench_dynamic_vram.py on 0.33.0, SDXL, both VRAM modes
#   live:      bench_server_realtime.py on 0.33.0 with both flags (native-static, where the fast path captures):
#              the live clients' graphs (issue 23; GRAPHS, ARMS, LIVE_ARMS, CALLS override), then the table;
#              the floor graph (no model), (b) with the other captured samplers; the client waits on the websocket;
#              each arm's phases (where a job's time goes); IMAGE_OUT=ws-png|ws-jpeg sends the image over the
#              websocket as krita does (default: PreviewImage + /view); then bench_client_floor (every way back)
#   live-sdxl: the same for graph (c), krita's live graph on SDXL 1024² (models built by --prepare-only, ~2 min)
#   kernels:   bench_realtime.py on 0.8.0 (no Dynamic VRAM in-process): the per-kernel profile (issue 23;
#              KJOBS, KVARIANTS override; max-autotune compiles for minutes: give it its own call)
#   batch4:    bench_realtime.py on 0.8.0, SD1.5 and SDXL at batch 4, every arm (issue 23: the runs that ran out
#              of the H100's memory before the fast path's memory was visible to ComfyUI), capture events kept
#   sequences: bench_dv_sequences.py on 0.33.0 with main.py's defaults (Dynamic VRAM): each job sequence in a fresh
#              server (SEQUENCES overrides the list); expected after the issue-21 fix: every sequence survives,
#              every plain-after-* image equals plain-first's (same_as_fresh true)
# Results (JSON, logs) go to $OUT (or out/device); the tables print last.
set -uo pipefail
payload="$1"; stage="$2"; out="${OUT:-out/device}"; mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
py() { python3 -m "lcm_lora_pack.bench.device.$1" "${@:2}"; }
case "$stage" in
  inprocess)
    source "$payload/pack/bench/device/setup_hosts.sh" "$payload" 0.33.0
    py bench_dynamic_vram --vram dynamic --fast-modes cuda_graph,compile_cuda_graph --json "$out/033-dynamic.json" 2>&1 | tee "$out/033-dynamic.log" | grep -E "^(ROW|HEADER)|Error|error" | grep -v "^.*WARNING"
    py bench_dynamic_vram --vram disabled --fast-modes cuda_graph,compile_cuda_graph --json "$out/033-disabled.json" 2>&1 | tee "$out/033-disabled.log" | grep -E "^(ROW|HEADER)|Error|error" | grep -v "^.*WARNING"
    source "$payload/pack/bench/device/setup_hosts.sh" "$payload" 0.8.0
    py bench_dynamic_vram --vram dynamic --fast-modes cuda_graph --json "$out/080.json" 2>&1 | tee "$out/080.log" | grep -E "^(ROW|HEADER)|Error|error" | grep -v "^.*WARNING"
    ;;
  server)
    source "$payload/pack/bench/device/setup_hosts.sh" "$payload" 0.33.0
    py bench_server_realtime --prepare-only --base /tmp/rt-base
    for config in ${CONFIGS:-default no-dynamic no-cuda-malloc native-static}; do
      py bench_server_realtime --config "$config" --base /tmp/rt-base --json "$out/server-$config.json" ${SERVER_ARGS:-} 2>&1 | grep -E "^(ARM|SERVER|PARITY)"
      cp /tmp/rt-base/server-$config.log "$out/" 2>/dev/null
    done
    ;;
  dynamic)
    source "$payload/pack/bench/device/setup_hosts.sh" "$payload" 0.33.0
    py bench_dynamic_vram --vram dynamic --families sd15,sdxl --fast-modes cuda_graph --json "$out/033-dynamic-aimdo.json" 2>&1 | tee "$out/033-dynamic-aimdo.log" | grep -E "^(ROW|HEADER)|Dynamic VRAM"
    py bench_dynamic_vram --vram disabled --families sdxl --fast-modes cuda_graph --json "$out/033-sdxl-disabled.json" 2>&1 | tee "$out/033-sdxl-disabled.log" | grep -E "^(ROW|HEADER)"
    ;;
  sdxl)
    source "$payload/pack/bench/device/setup_hosts.sh" "$payload" 0.33.0
    for vram in dynamic disabled; do
      py bench_dynamic_vram --vram $vram --families sdxl --fast-modes cuda_graph --json "$out/033-sdxl-$vram.json" 2>&1 | grep -E "^(ROW|HEADER)"
    done
    ;;
  live|live-sdxl)
    source "$payload/pack/bench/device/setup_hosts.sh" "$payload" 0.33.0
    python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
    default="floor:eager,live-nocn,taesd,live:eager+core_compile+cuda_graph,live-nocn@euler_ancestral:eager+cuda_graph,live-nocn@dpmpp_2m:eager+cuda_graph,live-nocn@ddim:eager+cuda_graph"
    [ "$stage" = live-sdxl ] && default="live-sdxl:eager+core_compile+cuda_graph,live-sdxl-nocn:eager+cuda_graph+compile_cuda_graph"
    py bench_server_realtime --prepare-only --base /tmp/rt-base --graphs "${GRAPHS:-$default}"
    timeout ${LIVE_TIMEOUT:-540} python3 -m lcm_lora_pack.bench.device.bench_server_realtime --config native-static \
      --base /tmp/rt-base --graphs "${GRAPHS:-$default}" \
      --arms "${ARMS:-eager,core_compile,cuda_graph,compile_cuda_graph}" --calls ${CALLS:-8} \
      --image-out "${IMAGE_OUT:-preview}" --json "$out/live.json" 2>&1 | tee "$out/live.log" | grep -E "^(ARM|TABLE|PHASES|\|)"
    python3 -m lcm_lora_pack.bench.device.bench_client_floor --calls 30 --flags "--disable-cuda-malloc --disable-dynamic-vram" \
      2>&1 | tee "$out/floor.log" | grep -E "^\|"
    cp /tmp/rt-base/server-native-static.log "$out/" 2>/dev/null
    ;;
  kernels)
    source "$payload/pack/bench/device/setup_hosts.sh" "$payload" 0.8.0
    timeout ${KERNELS_TIMEOUT:-540} python3 -m lcm_lora_pack.bench.bench_realtime --device cuda --jobs "${KJOBS:-sd15:1}" \
      --modes compile_cuda_graph --core-backends '' --decode-families '' --lora-family '' --repeats 5 --warmup 1 \
      --profile-kernels "${KVARIANTS:-baseline,sdpa-flash,sdpa-efficient,sdpa-math,channels_last,bf16}" \
      --out "$out/kernels" 2>&1 | tee "$out/kernels.log" | grep -E "^\||^###|FAILED|Error"
    ;;
  batch4)
    source "$payload/pack/bench/device/setup_hosts.sh" "$payload" 0.8.0
    timeout ${BATCH4_TIMEOUT:-540} python3 -m lcm_lora_pack.bench.bench_realtime --device cuda --jobs "${BJOBS:-sd15:4,sdxl:4}" \
      --lora-family '' --repeats 5 --warmup 1 --out "$out/batch4" 2>&1 | tee "$out/batch4.log" \
      | grep -E "^\||^###|FAILED|Error|released|asked ComfyUI|OutOfMemory"
    ;;
  sequences)
    source "$payload/pack/bench/device/setup_hosts.sh" "$payload" 0.33.0
    py bench_server_realtime --prepare-only --base /tmp/rt-base
    timeout ${SEQ_TIMEOUT:-540} python3 -m lcm_lora_pack.bench.device.bench_dv_sequences --base /tmp/rt-base \
      ${SEQUENCES:+--sequences "$SEQUENCES"} --json "$out/sequences.json" 2>&1 | tee "$out/sequences.log" | grep -E "^SEQUENCE"
    tar -czf "$out/sequence-logs.tgz" -C /tmp/rt-base $(cd /tmp/rt-base && ls server-seq-*.log) 2>/dev/null  # one file back (8 at most)
    ;;
esac
