#!/usr/bin/env bash
# ResearchKit vs PyTorch on the same tiny MAE step, batch and threads; prints both and the ratio.
#   bash bench/compare.sh [--batch 256] [--steps 30] [--threads 2]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
batch=256 steps=30 threads=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --batch) batch=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "usage: bench/compare.sh [--batch B] [--steps N] [--threads T]" >&2; exit 2 ;;
  esac
done
bash "$root/.ci/setup" --bench
rk=$("$root/researchkit" bench --method mae --preset tiny --batch "$batch" --steps "$steps" --threads "$threads" --json)
# The same step without --threads: giving the default count explicitly must cost nothing (environment.md, threads).
plain=$("$root/researchkit" bench --method mae --preset tiny --batch "$batch" --steps "$steps" --json)
# OpenBLAS: Debian's PyTorch otherwise falls back to the reference BLAS (~16 img/s).
pt=$(OPENBLAS_NUM_THREADS="$threads" /usr/bin/python3 "$root/bench/mae_reference.py" --batch "$batch" --steps "$steps" --threads "$threads")
/usr/bin/python3 - "$rk" "$pt" "$plain" <<'PY'
import json, sys
rk, pt, plain = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"{'':12}{'images/s':>10}{'median ms':>11}{'peak RSS MB':>13}{'params':>10}  implementation")
print(f"{'ResearchKit':12}{rk['images_per_s']:>10}{rk['median_step_ms']:>11}{rk['peak_rss_mb']:>13}{rk['parameters']:>10}  TorchSharp, {rk['torch']}, {rk['threads']} threads")
print(f"{'PyTorch':12}{pt['images_per_s']:>10}{pt['median_step_ms']:>11}{pt['peak_rss_mb']:>13}{pt['parameters']:>10}  {pt['implementation']}, {pt['threads']} threads")
ratio = rk['images_per_s'] / pt['images_per_s']
flag = rk['images_per_s'] / plain['images_per_s']
print(json.dumps({"researchkit_images_per_s": rk['images_per_s'], "pytorch_images_per_s": pt['images_per_s'], "ratio": round(ratio, 2),
                  "researchkit_rss_growth_mb": round(rk['rss_end_mb'] - rk['rss_after_warmup_mb'], 1),
                  "threads_flag_ratio": round(flag, 2)}))
if flag < 0.9:
    sys.exit(f"--threads {rk['threads']} (the default count) ran at {flag:.2f}× the speed without the flag; it must cost nothing")
PY
