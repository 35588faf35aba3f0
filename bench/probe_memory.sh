#!/usr/bin/env bash
# Peak memory and time of `researchkit probe --layer all` for each method's tiny preset (issue 22, item 13: iGPT's
# probe peaked at 13.2 GB). Each method is pre-trained briefly (the probe's memory does not depend on how well), then
# probed on the default protocol (10k fit, 10k test) unless --fit/--test say otherwise. Prints one JSON object per method
# and exits non-zero when any peak passes --limit-mb (default 2048).
#   bash bench/probe_memory.sh [--methods mae,igpt,...] [--fit N] [--test N] [--limit-mb MB]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
methods="mae,beit,igpt,rotnet,supervised,denoising,context-encoder,colorization,split-brain" fit=10000 test=10000 limit=2048
while [ $# -gt 0 ]; do
  case "$1" in
    --methods) methods=$2; shift 2 ;;
    --fit) fit=$2; shift 2 ;;
    --test) test=$2; shift 2 ;;
    --limit-mb) limit=$2; shift 2 ;;
    *) echo "usage: bench/probe_memory.sh [--methods a,b] [--fit N] [--test N] [--limit-mb MB]" >&2; exit 2 ;;
  esac
done
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
over=0
for method in ${methods//,/ }; do
  # The colour methods need RGB images; BEiT is measured with pixel targets (a tokenizer changes only its head).
  dataset=fashion-mnist; extra=()
  case "$method" in colorization|split-brain) dataset=shapes ;; beit) extra=(--target pixels) ;; esac
  "$root/researchkit" pretrain --method "$method" --dataset "$dataset" --train-limit 512 --batch 128 "${extra[@]}" \
    --out "$work/$method" > /dev/null 2>&1
  /usr/bin/time -f "%M %e" -o "$work/$method.time" "$root/researchkit" probe "$work/$method" --layer all \
    --train-limit "$fit" --test-limit "$test" --json > "$work/$method.json" 2> /dev/null
  read -r kb seconds < "$work/$method.time"
  mb=$((kb / 1024))
  [ "$mb" -le "$limit" ] || over=1
  printf '{"method": "%s", "dataset": "%s", "fit": %s, "test": %s, "layers": %s, "peak_rss_mb": %s, "seconds": %s, "limit_mb": %s}\n' \
    "$method" "$dataset" "$fit" "$test" "$(wc -l < "$work/$method.json")" "$mb" "$seconds" "$limit"
done
exit $over
