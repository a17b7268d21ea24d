#!/usr/bin/env bash
# What one hit costs, counted by valgrind: heap allocations (DHAT) and
# instructions (callgrind) per hit, for a hand-written GET + decode (raw), a
# cache-aside Redis hit and a cache-aside local-tier hit. Each mode runs twice (1000
# and 3000 hits); the difference over 2000 hits cancels start-up and
# connection set-up. Needs valgrind and the Redis at $REDIS_URL.
#
#   bash benches/per_hit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exe=$(cargo bench --bench per_hit --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "per_hit" and m.get("executable"):
        print(m["executable"])')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

count() { # tool mode hits -> number
  local tool=$1 mode=$2 hits=$3 log="$out/$1-$2-$3.log"
  MODE=$mode HITS=$hits valgrind --tool="$tool" --"$tool"-out-file="$out/$tool.out" "$exe" 2>"$log" >/dev/null
  if [ "$tool" = dhat ]; then
    sed -n 's/.*Total: *[0-9,]* bytes in \([0-9,]*\) blocks.*/\1/p' "$log" | tr -d ,
  else
    sed -n 's/.*Collected : *\([0-9]*\).*/\1/p' "$log"
  fi
}

echo "| per hit (valgrind, 2000 hits) | allocations | instructions |"
echo "|---|---|---|"
for mode in ${MODES:-raw redis local local-fn kept-fn}; do
  a1=$(count dhat "$mode" 1000); a3=$(count dhat "$mode" 3000)
  i1=$(count callgrind "$mode" 1000); i3=$(count callgrind "$mode" 3000)
  python3 -c "print(f'| $mode | {($a3 - $a1) / 2000:.1f} | {($i3 - $i1) / 2000:,.0f} |')"
done
