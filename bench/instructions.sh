#!/usr/bin/env bash
# Instructions a request costs in process, counted by valgrind's callgrind: a figure that other work on the
# machine hardly moves (CPU time does, by 20-50 % on a shared box), for A/B-ing a change to the request path.
#
#   bash bench/instructions.sh [hit|miss|floor] [SRC_DIR]
#
# Runs bench/server_inprocess.py twice under callgrind, with 50 and 250 batches of 16 requests, and prints
# the difference over the 3,200 extra requests: start-up and imports cancel out. SRC_DIR (default: this
# checkout's src) is put first on PYTHONPATH, so a copy of src/ with a change in it is measured against the
# same interpreter and packages. Repeats agree within ~1-4 % (timers run by wall time, which valgrind
# slows ~50x); a difference smaller than that is not one. Each run takes ~1.5 min.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-hit}
SRC=${2:-$PWD/src}
command -v valgrind > /dev/null || { echo "valgrind is not installed" >&2; exit 1; }
count() {
  # OpenBLAS's idle worker threads (numpy's) are counted too, by how long the run takes: one thread, none idle
  PYTHONPATH="$SRC" PYTHONHASHSEED=0 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    .venv/bin/python bench/server_inprocess.py "$MODE" --batches "$1" --rounds 1 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
few=$(count 50)
many=$(count 250)
python3 -c "print(f'$MODE ($SRC): {($many - $few) / 3200:,.0f} instructions a request')"
