#!/usr/bin/env bash
# Instructions a request costs in process, tenancy's apps (bench/tenancy_inprocess.py --only), counted by valgrind's
# callgrind: a figure other work on the machine hardly moves, for telling what each part of tenancy costs.
#
#   bash bench/tenancy_instructions.sh [APP ...]     # default: bare tenancy
#
# APP is bare, tenancy, or tenancy without some stages: -accounting, -limits, -budget, -limits+budget, ...
# Each runs twice (480 and 2,080 requests after the same warm-up), and the difference over the 1,600 extra requests
# is printed: start-up and imports cancel out. Only the gateway's own process is counted, not the ledger's SQLite
# writer child. Repeats agree within ~1 % (the key cache's refresh runs by wall time, which valgrind slows ~50x).
# Each app takes ~2-4 min.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind > /dev/null || { echo "valgrind is not installed" >&2; exit 1; }
count() {
  PYTHONHASHSEED=0 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    .venv/bin/python bench/tenancy_inprocess.py --only="$1" --requests "$2" 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
apps=("$@"); [ ${#apps[@]} -gt 0 ] || apps=(bare tenancy)
for app in "${apps[@]}"; do
  few=$(count "$app" 480)
  many=$(count "$app" 2080)
  python3 -c "print(f'$app: {($many - $few) / 1600:,.0f} instructions a request')"
done
