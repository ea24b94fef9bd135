"""The observe stage: what one finished request leaves in the metrics."""

from __future__ import annotations

from aigw.observability.metrics import Metrics
from aigw.pipeline.context import RequestContext
from aigw.pipeline.stages.observe import Observe
from tests.unit.observability.test_metrics import value


def stage(metrics: Metrics) -> Observe:
    return Observe(metrics, None, None, log_requests=False, wall=lambda: 0.0)


async def test_in_flight_goes_back_to_zero_when_a_stage_routes_to_another_model() -> None:
    """A rules `route` changes ctx.model between the start and the end of a request: the gauge was raised
    under the model asked for and lowered under the routed one, so one stayed at +1 and the other went to -1
    for every routed request."""
    m = Metrics(models=["asked", "routed"])
    observe = stage(m)
    ctx = RequestContext(request_id="r1", api="openai", endpoint="chat", body={}, model="asked")
    await observe.on_request(ctx)
    assert value(m, "aigw_requests_in_flight", model="asked") == 1
    ctx.model = "routed"  # what the rules stage does for a `route` action
    await observe.record(ctx)
    assert value(m, "aigw_requests_in_flight", model="asked") == 0
    assert value(m, "aigw_requests_in_flight", model="routed") == 0


async def test_a_request_refused_before_the_stage_ran_leaves_the_gauge_alone() -> None:
    m = Metrics(models=["asked"])
    ctx = RequestContext(request_id="r2", api="openai", endpoint="chat", body={}, model="asked")
    await stage(m).record(ctx)  # e.g. a key refused for this model before the pipeline
    assert value(m, "aigw_requests_in_flight", model="asked") == 0
    assert value(m, "aigw_requests_total", model="asked", status="200") == 1
