#!/usr/bin/env python3
"""Where tenancy's cost goes over HTTP: the tenancy gateway with one part at a time taken out.

    .venv/bin/python bench/tenancy_breakdown.py [--rounds 6] [--seconds 3] [--parts ledger,headers,limits+budget]

Starts the shared fake upstream (0 ms, CPU 0) and, each pinned to CPU 1:
  bare        bench/configs/bare.yaml (master key, tenancy off)
  tenancy     bench/configs/tenancy.yaml (virtual key with rpm/tpm/parallel/budget at key,
              project and tenant; ledger on)
  -<part>     tenancy with that part patched out in the process, for comparison only:
              ledger     = ``Ledger.record`` does nothing (no rows buffered or written)
              ledger-store = rows buffered and batched, then dropped in the gateway (no writer child)
              ledger-sql = rows reach the writer child, which decodes them but runs no SQL
              headers    = no ``x-ratelimit-*`` response headers
              accounting = no accounting stage (no row built, none written); likewise
              limits, budget, or several joined by "+" (limits+budget+accounting leaves
              the virtual-key auth alone)
then measures CPU per request of each with ``tenancy_cpu.py``'s alternating wrk rounds
(c=16). ``tenancy`` minus ``-<part>`` is that part's share of the overhead, in the loaded
server, with the interference a SQLite writer thread causes on a shared core included,
which an in-process measurement (``tenancy_inprocess.py``) does not see. Loopback only;
every process started here is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(os.environ.get("SHARED_BENCH", REPO.parent / "shared" / "bench"))
PY = sys.executable
MASTER = "sk-bench-1234"
BIG = ["--rpm", "100000000", "--tpm", "2000000000", "--max-parallel", "100000", "--budget", "1000000000",
       "--period", "total"]
sys.path.insert(0, str(HERE))
from observability_bench import free_port, stop, wait_up  # noqa: E402
from tenancy_cpu import cpu_s, run  # noqa: E402

# Runs `aigw serve` with a part of tenancy patched out (bench-only; never how the gateway runs).
WRAPPER = """
import sys
part = sys.argv.pop(1)
if part == "ledger":
    from aigw.accounting.ledger import Ledger
    Ledger.record = lambda self, rec: None
elif part == "ledger-store":  # rows buffered and batched as usual, but no child process and no SQLite
    from aigw.stores.sqlite.ledger_writer import SqliteLedgerWriter
    async def _drop(self, records):
        return len(records)
    SqliteLedgerWriter.write = _drop
elif part == "ledger-sql":  # rows reach the writer child, which decodes them but writes nothing
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "noop_rows.py"), "w") as f:
        f.write("def count_rows(rows, conn):" + chr(10) + "    return len(rows)" + chr(10))
    os.environ["PYTHONPATH"] = here + os.pathsep + os.environ.get("PYTHONPATH", "")  # the child imports it
    import aigw.stores.sqlite.ledger_writer as lw
    lw.WRITER = "noop_rows:count_rows"
elif part == "headers":
    import aigw.pipeline.stages.limits as limits
    limits.add_headers = lambda out, admission: None  # what limits.py calls
else:  # stages by name, "+"-joined: their build() says "off"
    import importlib
    for name in part.split("+"):
        importlib.import_module(f"aigw.pipeline.stages.{name}").build = lambda deps: None
from aigw.cli.main import main
sys.argv = ["aigw", *sys.argv[1:]]
main()
"""


def virtual_key(url: str) -> str:
    admin = ["--url", url, "--master-key", MASTER, "--json"]
    cli = [PY, "-m", "aigw"]
    subprocess.run([*cli, "tenants", "create", "bench-tenant", *BIG, *admin], check=True, capture_output=True)
    subprocess.run([*cli, "projects", "create", "bench-project", "--tenant", "bench-tenant", *BIG, *admin],
                   check=True, capture_output=True)
    out = subprocess.run([*cli, "keys", "create", "--project", "bench-project", *BIG, *admin], check=True,
                         capture_output=True, text=True).stdout
    return str(json.loads(out)["key"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--parts", default="ledger,headers,accounting,limits+budget,limits+budget+accounting")
    args = ap.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        wrapper = Path(tmp) / "patched_serve.py"
        wrapper.write_text(WRAPPER)
        try:
            up_port = free_port()
            procs.append(subprocess.Popen(["taskset", "-c", "0", PY, str(SHARED / "upstream.py"), "--port",
                                           str(up_port), "--delay-ms", "0", "--chunks", "20"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_up(f"http://127.0.0.1:{up_port}/health", procs[-1])
            targets: list[tuple[str, str, int, str]] = []
            plan = [("bare", "bare.yaml", ""), ("tenancy", "tenancy.yaml", "")]
            plan += [(f"-{p}", "tenancy.yaml", p) for p in parts]
            for label, config, part in plan:
                port = free_port()
                folder = Path(tmp) / label
                folder.mkdir()
                env = {**os.environ, "AIGW_BENCH_PORT": str(port), "AIGW_BENCH_KEY": MASTER,
                       "AIGW_BENCH_DIR": str(folder), "AIGW_BENCH_UPSTREAM": f"http://127.0.0.1:{up_port}/v1"}
                serve = [PY, str(wrapper), part or "none"] if part else [PY, "-m", "aigw"]
                argv = ["taskset", "-c", "1", *serve, "serve", "--config", str(HERE / "configs" / config),
                        "--port", str(port), "--log-level", "warning"]
                procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                              stderr=open(folder / "serve.log", "wb")))  # noqa: SIM115
                url = f"http://127.0.0.1:{port}"
                wait_up(url + "/health/live", procs[-1])
                key = MASTER if config == "bare.yaml" else virtual_key(url)
                targets.append((label, url, procs[-1].pid, key))
            for _, url, _, key in targets:  # warm-up, untimed: key caches, first connections, first batches
                run(url, key, 1, 16)
            per: dict[str, list[float]] = {t[0]: [] for t in targets}
            for r in range(args.rounds):
                for label, url, pid, key in (targets if r % 2 == 0 else targets[::-1]):
                    before = cpu_s(pid)
                    reqs, _ = run(url, key, args.seconds, 16)
                    per[label].append((cpu_s(pid) - before) / reqs * 1e6)
        finally:
            for p in reversed(procs):
                stop(p)
    med = {label: statistics.median(v) for label, v in per.items()}
    bare, ten = med["bare"], med["tenancy"]
    print(f"CPU per request, median of {args.rounds} alternating rounds (wrk c=16, one core); single figures "
          "move by ~10 µs between runs, so read shares across a few runs")
    width = max(len(label) for label in med)
    print(f"{'target':{width}s} {'µs/req':>8s} {'vs bare':>8s}  share of tenancy's overhead")
    for label, us in med.items():
        share = ""
        if label.startswith("-"):
            share = f"{label[1:]}: {ten - us:+.1f} µs ({(ten - us) / (ten - bare) * 100:.0f} %)" if ten > bare else ""
        print(f"{label:{width}s} {us:8.1f} {us / bare:7.2f}x  {share}")


if __name__ == "__main__":
    main()
