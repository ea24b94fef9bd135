"""What the official openai SDK does with the gateway's answers where the API reference is specific:
error codes and classes, the SDK's own retries, n > 1, structured outputs. Upstreams are fakes that
speak OpenAI's exact wire format (``tests.fakes.openai_upstream``)."""

from __future__ import annotations

import openai
import pytest

from tests.fakes import openai_faults as oai_faults
from tests.fakes.faults import Fault
from tests.integration.conftest import Upstreams
from tests.support.gateway import RunningGateway

ASK = [{"role": "user", "content": "What is a gateway?"}]


@pytest.fixture
def client(gateway: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key="anything", max_retries=0)


@pytest.mark.parametrize(("extra", "param", "code"), [
    ({"temperature": 5}, "temperature", "decimal_above_max_value"),
    ({"temperature": "hot"}, "temperature", "invalid_type"),
    ({"n": 0}, "n", "integer_below_min_value"),
    ({"top_logprobs": 21}, "top_logprobs", "integer_above_max_value"),
    ({"messages": []}, "messages", "empty_array"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role", "invalid_value"),
    ({"model": None}, "model", "invalid_type"),
])
def test_a_bad_field_is_a_400_with_openais_param_and_code(client: openai.OpenAI, extra: dict[str, object],
                                                           param: str, code: str) -> None:
    body = {"model": "mock", "messages": ASK, **extra}
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(**body)  # type: ignore[call-overload]
    assert (exc.value.param, exc.value.code, exc.value.type) == (param, code, "invalid_request_error")


def test_a_missing_field_is_missing_required_parameter(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.post("/chat/completions", body={"messages": ASK}, cast_to=object)
    assert (exc.value.param, exc.value.code) == ("model", "missing_required_parameter")
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model="mock-embed", input=5)  # type: ignore[arg-type]
    assert (exc.value.param, exc.value.code) == ("input", "invalid_type")


@pytest.mark.parametrize("fault", [
    oai_faults.error(401, "Incorrect API key provided: sk-o***oai.", code="invalid_api_key"),
    oai_faults.error(403, "You are not allowed to sample from this model", type_="permission_error"),
])
def test_an_upstream_refusing_the_gateways_credentials_is_not_retried_by_the_sdk(
        matrix_gateway: RunningGateway, ups: Upstreams, fault: Fault) -> None:
    ups.openai.faults.always(fault)
    sdk = openai.OpenAI(base_url=matrix_gateway.v1, api_key="k", max_retries=2)  # the SDK's default
    with pytest.raises(openai.InternalServerError) as exc:
        sdk.chat.completions.create(model="oai", messages=ASK)  # type: ignore[arg-type]
    assert exc.value.status_code == 502 and exc.value.code == "upstream_auth"
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert ups.openai.traffic.requests == 1  # the operator's config is wrong: no retry can mend it
