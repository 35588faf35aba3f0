#!/usr/bin/env bash
# The CUDA checks, in one run on a machine with a CUDA build of PyTorch (`bash .device/run.sh` calls this; see environment.md):
#   1. every method's command-line path on CUDA (tokenizers, pre-training with each target and sampling, probe, finetune,
#      sample, palette, bench), and checkpoints across devices: trained on CUDA and probed on the CPU, trained on the CPU
#      and resumed and probed on CUDA;
#   2. determinism on CUDA: the same run twice gives the same loss curve (fp32/TF32 and bf16), and bf16 against TF32;
#   3. the speed table: ResearchKit against PyTorch eager on the same MAE step (tiny at batch 256 and 1024, ViT-B/16 at
#      224² batch 64) in fp32, TF32 and bf16, with device memory; and `bench --study efficiency`.
# With --notebooks it also runs every notebook in smoke mode on CUDA (on `shapes`), three at a time beside the checks.
# Writes results.jsonl and logs under $RK_OUT (default /tmp/rk-out); prints a summary and exits non-zero on any failure.
#   bash bench/gpu.sh [--notebooks] [--quick] [--only checks|speed|notebooks]
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
O=${RK_OUT:-/tmp/rk-out}; mkdir -p "$O"
W=$(mktemp -d); results="$O/results.jsonl"; : > "$results"
notebooks=0; quick=0; only=all
while [ $# -gt 0 ]; do case "$1" in --notebooks) notebooks=1 ;; --quick) quick=1 ;; --only) only=$2; shift ;; esac; shift; done
[ "$only" = notebooks ] && notebooks=1
command -v researchkit >/dev/null || export PATH="$root:$PATH"   # a checkout: its ./researchkit launcher
py=${RK_PYTHON:-python3}
dev=${RK_DEVICE:-cuda}   # RK_DEVICE=cpu tries the script itself on a machine without a GPU
fail=0
record() { echo "$1" >> "$results"; }
check() {   # check NAME COMMAND...: runs it, records ok/failed with the log's last lines
  local name=$1; shift
  if "$@" > "$W/$name.log" 2>&1; then echo "ok      $name"; record "{\"check\":\"$name\",\"ok\":true}"
  else echo "FAILED  $name"; tail -5 "$W/$name.log" | sed 's/^/        /'; fail=1; record "{\"check\":\"$name\",\"ok\":false}"; fi
  cp "$W/$name.log" "$O/" 2>/dev/null
}
D="--dataset shapes --train-limit 2048 --batch 128"
cd "$W"
# Notebooks run beside the command-line checks (the machine has cores and GPU memory to spare), before the timed part.
run_notebooks() {
  export RESEARCHKIT_DEVICE=$dev
  for nb in "$root"/notebooks/*.ipynb; do
    name=$(basename "$nb" .ipynb)
    ( start=$(date +%s)
      if timeout 400 researchkit notebook run "$nb" -p Smoke=true -p Dataset=shapes -p ResultsFolder="$W/nb-$name" -o "$O/$name.ipynb" > "$W/nb-$name.log" 2>&1
      then echo "ok      notebook $name ($(( $(date +%s) - start )) s)"; echo "{\"notebook\":\"$name\",\"ok\":true,\"seconds\":$(( $(date +%s) - start ))}" >> "$results"
      else echo "FAILED  notebook $name"; grep -E "^error" "$W/nb-$name.log" | head -2 | sed 's/^/        /'; cp "$W/nb-$name.log" "$O/"; echo "{\"notebook\":\"$name\",\"ok\":false}" >> "$results"; fi ) &
    while [ "$(jobs -rp | wc -l)" -ge 3 ]; do sleep 1; done
  done
  wait
}
notebooks_job=; chains=()
if [ $notebooks = 1 ]; then
  echo "== notebooks, smoke mode on $dev, three at a time, in the background ($(date +%T))"
  run_notebooks & notebooks_job=$!
fi

if [ "$only" = all ] || [ "$only" = checks ]; then
echo "== command-line paths and determinism on CUDA, five chains at once ($(date +%T))"
same_curve() {   # same_curve A B: identical losses in two metrics.jsonl
  $py - "$1/metrics.jsonl" "$2/metrics.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:3])
print(f"{len(a)} logged steps; largest difference {max(abs(x - y) for x, y in zip(a, b)):.3g}")
sys.exit(0 if a == b else 1)
PY
}
(   # tokens: VQ tokenizer, MAE with token targets, BEiT, its fine-tuning
  check tokenizer-vq   researchkit tokenizer train --kind vq $D --codes 64 --epochs 1 --out tok --device $dev
  check mae-token      researchkit pretrain --method mae $D --target token --tokenizer tok --sampling block --augment crop-jitter --out mtok --device $dev
  check beit           researchkit pretrain --method beit $D --tokenizer tok --masking random --out beit --device $dev
  check finetune-beit  researchkit finetune beit --blocks 1 --epochs 1 --train-limit 1024 --json --device $dev
) & chains+=($!)
(   # MAE: pixels and PCA targets, grid sampling, bf16; probes on CUDA and, from the same run, on the CPU
  check mae-pixel      researchkit pretrain --method mae $D --epochs 2 --out mae --device $dev
  check probe-cuda     researchkit probe mae --layer all --train-limit 2000 --test-limit 1000 --json --device $dev
  check probe-on-cpu   researchkit probe mae --layer all --train-limit 2000 --test-limit 1000 --json --device cpu
  check show-mae       researchkit show mae --what reconstructions --n 8 --out reconstructions.png --device $dev
  check mae-pca-grid   researchkit pretrain --method mae $D --target pca --sampling grid --out pca --device $dev
  check mae-bf16       researchkit pretrain --method mae $D --precision bf16 --out maebf --device $dev
) & chains+=($!)
(   # iGPT: both objectives, a resume on CUDA, fine-tuning with its generative objective, sampling, a repeated run
  check igpt-ar        researchkit pretrain --method igpt $D --objective ar --out igar --device $dev
  check repeat-igpt    researchkit pretrain --method igpt $D --objective ar --out igar2 --device $dev
  check deterministic-igpt same_curve igar igar2
  check resume-igpt    researchkit pretrain --method igpt $D --objective ar --epochs 2 --out igar --device $dev
  check finetune-igpt  researchkit finetune igar --blocks 1 --epochs 1 --train-limit 1024 --json --device $dev
  check sample         researchkit show igar --what completions --n 4 --completions 2 --out samples.png --device $dev
  check evaluate-igpt  researchkit evaluate igar --n 512 --json --device $dev
  check igpt-bert      researchkit pretrain --method igpt $D --objective bert --out igbert --device $dev
) & chains+=($!)
(   # RotNet, the dVAE tokenizer, a palette; a run trained on the CPU resumed and probed on CUDA
  check rotnet         researchkit pretrain --method rotnet $D --out rot --device $dev
  check probe-rotnet   researchkit probe rot --layer all --train-limit 2000 --test-limit 1000 --json --device $dev
  check finetune-rot   researchkit finetune rot --epochs 1 --train-limit 1024 --json --device $dev
  check supervised     researchkit pretrain --method supervised $D --out sup --device $dev
  check evaluate-sup   researchkit evaluate sup --extra ood=shapes --n 1000 --json --device $dev
  check schedule-snap  researchkit pretrain --method rotnet $D --snapshot-steps 5 --out rotsnap --device $dev
  check probe-step     researchkit probe rotsnap --step 5 --layer 3 --train-limit 2000 --test-limit 1000 --json --device $dev
  # A dVAE this short may end with a collapse warning (exit 3); the run itself must complete.
  check tokenizer-dvae sh -c "researchkit tokenizer train --kind dvae $D --codes 64 --epochs 1 --out tokd --device $dev; c=\$?; [ \$c = 0 ] || [ \$c = 3 ]"
  check palette        researchkit palette fit --dataset shapes --k 16 --size 14 --images 500 --out palette.json
  check cpu-train      researchkit pretrain --method mae $D --out cpu --device cpu
  check cpu-resume-cuda researchkit pretrain --method mae $D --epochs 2 --out cpu --device $dev
  check cpu-probe-cuda researchkit probe cpu --layer 5 --train-limit 2000 --test-limit 1000 --json --device $dev
) & chains+=($!)
(   # determinism: the same run twice, in TF32 and in bf16
  for p in tf32 bf16; do
    check "repeat-$p-a" researchkit pretrain --method mae $D --epochs 2 --precision $p --out "det-$p-a" --device $dev
    check "repeat-$p-b" researchkit pretrain --method mae $D --epochs 2 --precision $p --out "det-$p-b" --device $dev
    check "deterministic-$p" same_curve "det-$p-a" "det-$p-b"
  done
) & chains+=($!)
wait "${chains[@]}"
grep -q '"ok":false' "$results" && fail=1
$py - det-tf32-a/metrics.jsonl det-bf16-a/metrics.jsonl <<'PY' | tee -a "$O/bf16-vs-tf32.txt"
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:3])
print("bf16 against tf32, MAE tiny on shapes, per logged step: " + ", ".join(f"{x:.4f}/{y:.4f}" for x, y in zip(a, b)))
print(f"largest relative difference {max(abs(x - y) / abs(x) for x, y in zip(a, b)):.4f}")
PY
fi

if [ -n "$notebooks_job" ]; then wait "$notebooks_job"; echo "== notebooks done ($(date +%T))"; fi
grep -q '"ok":false' "$results" && fail=1

if [ "$only" = all ] || [ "$only" = speed ]; then
echo "== speed ($(date +%T))"
steps=30; [ $quick = 1 ] && steps=10
bench_pair() {   # bench_pair NAME PRESET BATCH PRECISION [IMAGE CHANNELS]
  local name=$1 preset=$2 batch=$3 precision=$4 size=${5:-28} channels=${6:-1}
  local ours theirs
  ours=$(researchkit bench --method mae --preset "$preset" --batch "$batch" --steps $steps --warmup 5 --image-size "$size" --channels "$channels" \
    --precision "$precision" --device $dev --json 2>"$W/bench-$name.err" | tail -1)
  theirs=$($py "$root/bench/mae_reference.py" --preset "$preset" --batch "$batch" --steps $steps --warmup 5 --image-size "$size" --channels "$channels" \
    --precision "$precision" --device $dev 2>>"$W/bench-$name.err" | tail -1)
  $py - "$name" "$ours" "$theirs" <<'PY' >> "$results" || { echo "FAILED  bench $name"; tail -3 "$W/bench-$name.err"; fail=1; }
import json, sys
name, ours, theirs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(json.dumps({"bench": name, "researchkit_images_per_s": ours["images_per_s"], "pytorch_images_per_s": theirs["images_per_s"],
                  "ratio": round(ours["images_per_s"] / theirs["images_per_s"], 3), "researchkit_step_ms": ours["mean_step_ms"],
                  "pytorch_step_ms": theirs["mean_step_ms"], "researchkit_device_mb": ours.get("device_memory_mb"),
                  "pytorch_device_mb": theirs.get("device_memory_mb"), "pytorch_peak_allocated_mb": theirs.get("peak_allocated_mb"),
                  "parameters": [ours["parameters"], theirs["parameters"]]}))
PY
}
bench_pair tiny-256-fp32 tiny 256 fp32
bench_pair tiny-256-tf32 tiny 256 tf32
bench_pair tiny-256-bf16 tiny 256 bf16
bench_pair tiny-1024-fp32 tiny 1024 fp32
bench_pair vitb-64-fp32 vit-base 64 fp32 224 3
bench_pair vitb-64-tf32 vit-base 64 tf32 224 3
bench_pair vitb-64-bf16 vit-base 64 bf16 224 3
check efficiency researchkit bench --method mae --study efficiency --patch-sizes 7,4,2 --batch 64 --steps 10 --warmup 3 --device $dev --json
cp "$W/efficiency.log" "$O/efficiency.json" 2>/dev/null
fi

echo "== summary ($(date +%T))"
$py - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
bad = [r.get("check") or r.get("notebook") for r in rows if r.get("ok") is False]
print(f"{sum(1 for r in rows if r.get('ok'))} checks passed, {len(bad)} failed{': ' + ', '.join(bad) if bad else ''}")
print(f"{'step':16}{'ResearchKit img/s':>19}{'PyTorch img/s':>15}{'ratio':>7}{'RK ms':>8}{'PT ms':>8}{'RK MB':>8}{'PT MB':>8}")
for r in rows:
    if "bench" in r:
        print(f"{r['bench']:16}{r['researchkit_images_per_s']:>19}{r['pytorch_images_per_s']:>15}{r['ratio']:>7}{r['researchkit_step_ms']:>8}"
              f"{r['pytorch_step_ms']:>8}{str(r['researchkit_device_mb']):>8}{str(r['pytorch_device_mb']):>8}")
PY
rm -rf "$W"
exit $fail
