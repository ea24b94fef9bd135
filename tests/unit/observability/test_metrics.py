"""Metrics: what a scrape shows after requests are recorded, and that it follows Prometheus conventions."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from itertools import pairwise

from prometheus_client.parser import text_string_to_metric_families

from aigw.observability.metrics import LATENCY_BUCKETS, Metrics, Sample


def scrape(m: Metrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {sorted label items -> value} for every sample in the exposition."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(m: Metrics, name: str, **labels: str) -> float:
    total = 0.0
    for key, v in scrape(m).get(name, {}).items():
        if all((k, labels[k]) in key for k in labels):
            total += v
    return total


def ok(model: str = "gpt", **kw: object) -> Sample:
    base: dict[str, object] = dict(api="openai", model=model, provider="openai", deployment="d1", status=200,
                                   duration_s=0.2, upstream_s=0.15, tokens={"input": 10, "output": 5})
    base.update(kw)
    return Sample(**base)  # type: ignore[arg-type]


def test_a_request_moves_counters_histograms_tokens_and_cost() -> None:
    m = Metrics(["gpt"])
    m.record(ok(cost_usd=0.002, first_token_s=0.05))
    m.record(ok(status=502, tokens={}))
    m.attempt("gpt", "openai", "d1", "ok", 0.15)
    m.attempt("gpt", "openai", "d1", "unavailable", 0.15)
    assert value(m, "aigw_requests_total", model="gpt", status="200", deployment="d1", api="openai") == 1
    assert value(m, "aigw_requests_total", model="gpt", status="502") == 1
    assert value(m, "aigw_request_duration_seconds_count", model="gpt", outcome="ok") == 1
    assert value(m, "aigw_request_duration_seconds_count", model="gpt", outcome="error") == 1
    assert value(m, "aigw_upstream_duration_seconds_count", model="gpt") == 2
    assert value(m, "aigw_upstream_attempts_total", deployment="d1", outcome="unavailable") == 1
    assert abs(value(m, "aigw_gateway_overhead_seconds_sum", model="gpt") - 0.1) < 1e-9
    assert value(m, "aigw_time_to_first_token_seconds_count", model="gpt") == 1
    assert value(m, "aigw_tokens_total", kind="input") == 10
    assert value(m, "aigw_tokens_total", kind="output") == 5
    assert "aigw_tokens_total" in scrape(m) and value(m, "aigw_tokens_total", kind="reasoning") == 0
    assert abs(value(m, "aigw_cost_usd_total", model="gpt") - 0.002) < 1e-12


def test_retries_fallbacks_rejections_cache_breakers_and_store_errors() -> None:
    m = Metrics(["gpt", "small"])
    m.record(ok(retries=2, fallback_model="small"))
    m.record(ok(status=429, provider="none", deployment="none", rejected="rate_limited", tokens={}))
    m.cache_lookup("gpt", "hit")
    m.cache_lookup("gpt", "miss")
    m.set_breaker("d1", "open")
    m.store_error("request_log", "write")
    assert value(m, "aigw_retries_total", model="gpt", deployment="d1") == 2
    assert value(m, "aigw_fallbacks_total", model="gpt", fallback_model="small") == 1
    assert value(m, "aigw_rejections_total", model="gpt", reason="rate_limited") == 1
    assert value(m, "aigw_cache_lookups_total", result="hit") == 1
    assert value(m, "aigw_cache_lookups_total", result="miss") == 1
    assert value(m, "aigw_circuit_breaker_state", deployment="d1") == 2
    assert value(m, "aigw_store_errors_total", store="request_log", operation="write") == 1


def test_unknown_models_share_one_series_so_clients_cannot_grow_cardinality() -> None:
    m = Metrics(["gpt"])
    for i in range(50):
        m.record(ok(model=f"made-up-{i}", status=404, tokens={}))
    models = {dict(k)["model"] for k in scrape(m)["aigw_requests_total"]}
    assert models == {"other"}
    assert value(m, "aigw_requests_total", model="other", status="404") == 50


def test_made_up_model_names_do_not_grow_the_process_either() -> None:
    """One series for them all, and no per-name entry behind it: a client sending a new model name on every
    call (each a 404) must not grow the gateway's memory without bound."""
    import tracemalloc

    m = Metrics(["gpt"])

    def calls(start: int, n: int) -> None:
        for i in range(start, start + n):
            m.started(f"made-up-{i}")
            m.finished(f"made-up-{i}")
            m.record(ok(model=f"made-up-{i}", status=404, tokens={}))

    calls(0, 100)  # the one "other" series is made
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        calls(100, 5000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes kept for 5000 made-up model names"
    assert value(m, "aigw_requests_in_flight", model="other") == 0


def test_tenant_label_only_when_config_allows_it() -> None:
    off, on = Metrics(["gpt"]), Metrics(["gpt"], tenant_label=True)
    for m in (off, on):
        m.record(ok(tenant="acme"))
    assert all("tenant" not in dict(k) for k in scrape(off)["aigw_requests_total"])
    assert value(on, "aigw_requests_total", tenant="acme") == 1


def test_in_flight_goes_up_and_back_down() -> None:
    m = Metrics(["gpt"])
    m.started("gpt")
    m.started("gpt")
    assert value(m, "aigw_requests_in_flight", model="gpt") == 2
    m.finished("gpt")
    m.finished("gpt")
    assert value(m, "aigw_requests_in_flight", model="gpt") == 0


def test_latency_buckets_resolve_one_millisecond_to_sixty_seconds() -> None:
    assert LATENCY_BUCKETS[0] == 0.001 and LATENCY_BUCKETS[-1] == 60.0
    m = Metrics(["gpt"])
    m.record(ok(duration_s=0.0007))
    m.record(ok(duration_s=45.0))
    buckets = {dict(k)["le"]: v for k, v in scrape(m)["aigw_request_duration_seconds_bucket"].items()}
    assert buckets["0.001"] == 1 and buckets["30.0"] == 1 and buckets["60.0"] == 2


def test_names_follow_prometheus_conventions() -> None:
    m = Metrics(["gpt"])
    m.record(ok(cost_usd=0.1, first_token_s=0.1, retries=1))
    for family in text_string_to_metric_families(m.render().decode()):
        assert family.name.startswith("aigw_"), family.name
        assert family.documentation, family.name
        if family.type == "counter" and family.samples:
            assert any(s.name == family.name + "_total" for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        assert not any(unit in family.name for unit in ("_ms", "millis", "_msec")), family.name


def test_multiprocess_mode_merges_every_worker(tmp_path: object) -> None:
    """Two worker processes count into PROMETHEUS_MULTIPROC_DIR; a scrape sums them."""
    code = textwrap.dedent("""
        import sys
        from aigw.observability.metrics import Metrics, Sample
        m = Metrics(["gpt"], multiprocess_dir=sys.argv[1])
        m.record(Sample(api="openai", model="gpt", provider="p", deployment="d", status=200, duration_s=0.1))
        m.started("gpt")
        if sys.argv[2] == "scrape":
            sys.stdout.write(m.render().decode())
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code, str(tmp_path), "count"], env=env, check=True)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), "scrape"], env=env, check=True,
                         capture_output=True, text=True).stdout
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(out) for s in f.samples}
    key = ("api", "openai"), ("deployment", "d"), ("model", "gpt"), ("provider", "p"), ("status", "200")
    assert samples[("aigw_requests_total", key)] == 2


def test_lock_free_and_prometheus_client_families_render_the_same(tmp_path: object) -> None:
    """One process uses the lock-free families; with workers prometheus_client's. Same text either way."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from aigw.observability.metrics_native import FastCounter, FastHistogram

    fast_r, prom_r = CollectorRegistry(), CollectorRegistry()
    fc = FastCounter("x_requests", "doc", ["a"], fast_r)
    fh = FastHistogram("x_seconds", "doc", ["a"], fast_r, buckets=LATENCY_BUCKETS)
    pc = Counter("x_requests", "doc", ["a"], registry=prom_r)
    ph = Histogram("x_seconds", "doc", ["a"], registry=prom_r, buckets=LATENCY_BUCKETS)
    for v in (0.0005, 0.001, 0.0011, 0.3, 59.0, 61.0, 0.001):
        for counter, hist in ((fc, fh), (pc, ph)):
            counter.labels("q").inc(2)
            hist.labels("q").observe(v)

    def samples(r: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        from prometheus_client import generate_latest

        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(generate_latest(r).decode()) for s in f.samples
                if not s.name.endswith("_created")}

    assert samples(fast_r) == samples(prom_r)


def test_the_exposition_is_well_formed_text_format() -> None:
    """What a scraper parses strictly: HELP and TYPE once per family, ahead of its samples; label values with
    quotes, backslashes and newlines escaped; histogram buckets cumulative up to +Inf, which equals _count."""
    m = Metrics(["gpt"], tenant_label=True)
    odd = 'te"n\\ant\nx'
    for duration in (0.0004, 0.2, 0.2, 75.0):
        m.record(ok(tenant=odd, duration_s=duration, first_token_s=0.01))
    m.attempt("gpt", "openai", "d1", "timeout", 3.0)
    m.refused("openai", 401, 0.001)
    m.cache_lookup("gpt", "hit")
    text = m.render().decode()
    lines = text.splitlines()
    for kind in ("HELP", "TYPE"):
        names = [line.split()[2] for line in lines if line.startswith(f"# {kind} ")]
        assert len(names) == len(set(names)), f"{kind} twice"
    assert 'tenant="te\\"n\\\\ant\\nx"' in text  # the exposition's own escapes, on one line
    typed = {line.split()[2]: line.split()[3] for line in lines if line.startswith("# TYPE ")}
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == {n.removesuffix("_total") for n in typed}
    assert {s.labels.get("tenant") for s in families["aigw_requests"].samples} == {odd, ""}
    for name, family in families.items():
        if family.type != "histogram":
            continue
        series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        counts: dict[tuple[tuple[str, str], ...], float] = {}
        for s in family.samples:
            rest = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if s.name == name + "_bucket":
                series.setdefault(rest, []).append((float(s.labels["le"]), s.value))
            elif s.name == name + "_count":
                counts[rest] = s.value
        for rest, buckets in series.items():
            assert [le for le, _ in buckets] == sorted(le for le, _ in buckets) and buckets[-1][0] == float("inf")
            assert all(a[1] <= b[1] for a, b in pairwise(buckets)), name
            assert buckets[-1][1] == counts[rest], name


def test_with_workers_each_copies_its_breakers_as_its_calls_move_them_not_only_when_scraped(tmp_path: object) -> None:
    """A scrape reaches one worker: another worker's breaker, opened by a failed call there, shows in it (the gauge
    is the highest state any worker's breaker is in)."""
    code = textwrap.dedent("""
        import sys
        from aigw.observability.metrics import Metrics
        m = Metrics(["gpt"], multiprocess_dir=sys.argv[1])
        states = {"d": "closed"}
        m.on_scrape(lambda: [m.set_breaker(d, s) for d, s in states.items()])
        if sys.argv[2] == "scrape":
            sys.stdout.write(m.render().decode())
        else:  # a worker that is never scraped: its calls move its breaker
            states["d"] = sys.argv[3]
            m.attempt("gpt", "p", "d", sys.argv[4], 0.1)
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def breaker_after(state: str, outcome: str) -> float:
        subprocess.run([sys.executable, "-c", code, str(tmp_path), "call", state, outcome], env=env, check=True)
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path), "scrape"], env=env, check=True,
                             capture_output=True, text=True).stdout
        return max(s.value for f in text_string_to_metric_families(out) for s in f.samples
                   if s.name == "aigw_circuit_breaker_state" and s.labels["deployment"] == "d")

    assert breaker_after("open", "unavailable") == 2
