"""Config loading: env substitution, defaults, and errors that name file, field and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigw.config.load import ConfigError, load_config
from aigw.config.models import Deployment
from tests.support.config_files import write_config


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT",
                 "AIGW_MASTER_KEY", "AIGW_CONFIG", "AIGW_DATABASE_URL", "AIGW_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


def test_no_config_serves_the_mock_models_on_loopback() -> None:
    config = load_config()
    assert config.server.host == "127.0.0.1" and config.server.port == 4000
    assert config.database_url == "sqlite:///aigw.db" and config.redis_url == ""
    assert {"mock", "mock-large", "mock-embed"} <= set(config.model_names())


def test_providers_with_keys_in_the_environment_are_added(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com")
    config = load_config()
    providers = {d.provider for d in config.models}
    assert providers == {"mock", "openai", "anthropic", "azure"}
    gpt = next(d for d in config.models if d.name == "gpt-4o-mini")
    assert gpt.api_key == "sk-test" and gpt.api_base == "https://api.openai.com/v1"
    azure = next(d for d in config.models if d.provider == "azure")
    assert azure.api_version and azure.deployment


def test_env_substitution_with_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-from-env")
    path = write_config(tmp_path, """
server:
  master_key: ${AIGW_MASTER_KEY:-}
  port: ${PORT:-4100}
models:
  - name: fast
    provider: openai
    model: gpt-4o-mini
    api_key: ${MY_KEY}
""")
    config = load_config(path)
    assert config.server.master_key == "" and config.server.port == 4100
    assert config.models[0].api_key == "sk-from-env"
    assert config.model_names() == ["fast"]


def test_missing_env_variable_names_file_and_field(tmp_path: Path) -> None:
    path = write_config(tmp_path, "models:\n  - name: a\n    provider: openai\n    api_key: ${NOPE_NOT_SET}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value) and "models[0].api_key" in str(exc.value) and "NOPE_NOT_SET" in str(exc.value)


def test_unknown_key_is_rejected_with_its_path(tmp_path: Path) -> None:
    path = write_config(tmp_path, "server:\n  prot: 4000\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value) and "server.prot" in str(exc.value) and "unknown key" in str(exc.value)


def test_wrong_type_says_what_was_expected(tmp_path: Path) -> None:
    path = write_config(tmp_path, "models:\n  - name: a\n    provider: nonsense\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "models[0].provider" in str(exc.value) and "openai" in str(exc.value)


def test_stream_keepalive_is_on_by_default_and_never_negative(tmp_path: Path) -> None:
    assert load_config().server.stream_keepalive_s == 15  # under the 60 s idle timeouts of nginx and AWS ALB
    assert load_config(write_config(tmp_path, "server:\n  stream_keepalive_s: 0\n")).server.stream_keepalive_s == 0
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, "server:\n  stream_keepalive_s: -1\n"))
    assert "server.stream_keepalive_s" in str(exc.value)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write_config(tmp_path, "server: [unclosed"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_azure_needs_an_endpoint(tmp_path: Path) -> None:
    path = write_config(tmp_path, "models:\n  - name: a\n    provider: azure\n")
    with pytest.raises(ConfigError, match=r"models\[0\].api_base"):
        load_config(path)


def test_master_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGW_MASTER_KEY", "sk-master")
    assert load_config().server.master_key == "sk-master"


def test_budget_alert_thresholds_are_fractions_of_the_budget(tmp_path: Path) -> None:
    path = write_config(tmp_path, "tenancy:\n  alert_thresholds: [50, 80, 100]\n")  # percentages would never fire
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "tenancy.alert_thresholds[0]" in str(exc.value) and "1" in str(exc.value)
    ok = write_config(tmp_path, "tenancy:\n  alert_thresholds: [0.5, 0.9, 1]\n")
    assert load_config(ok).tenancy.alert_thresholds == [0.5, 0.9, 1.0]


def test_a_yaml_mistake_is_one_line_with_file_line_and_column(tmp_path: Path) -> None:
    path = write_config(tmp_path, "server:\n  host: 127.0.0.1\n   port: 4000\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == f"{path}:3:8: not valid YAML: mapping values are not allowed here"


def test_a_key_given_twice_is_refused_not_silently_dropped(tmp_path: Path) -> None:
    path = write_config(tmp_path,
                        "cache: {mode: exact}\nmodels:\n  - {name: a, provider: mock}\ncache:\n  mode: 'off'\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == f"{path}:4:1: not valid YAML: duplicate key 'cache' (first at line 1)"


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    path = write_config(tmp_path, "models:\n  - &a {name: a, provider: mock, weight: 1}\n  - {<<: *a, weight: 2}\n")
    assert [d.weight for d in load_config(path).models] == [1, 2]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("redis_url: localhost:6379", "redis_url: must be empty or start with redis://, rediss:// or unix://"),
        ("database_url: mysql://u:hunter2@db/aigw", "database_url: must start with sqlite: "),
    ],
)
def test_a_url_with_the_wrong_scheme_fails_at_load_naming_the_field(tmp_path: Path, text: str, line: str) -> None:
    path = write_config(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)  # before: `config check` said ok, and `serve` failed without naming the field
    assert f"  {line}" in str(exc.value) and "hunter2" not in str(exc.value)


def test_a_bad_url_from_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGW_REDIS_URL", "localhost")
    with pytest.raises(ConfigError, match=r"redis_url: must be .* \(set by AIGW_REDIS_URL\)"):
        load_config()


@pytest.mark.parametrize("url", ["sqlite:///aigw.db", "sqlite://:memory:", "postgres://h/db", "postgresql://h/db"])
def test_the_database_urls_the_stores_open_are_accepted(tmp_path: Path, url: str) -> None:
    assert load_config(write_config(tmp_path, f"database_url: '{url}'\n")).database_url == url


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://:p%40ss@h:6380", "unix:///tmp/redis.sock?db=1",
                                 "REDIS://h:6379", "Rediss://h"])
def test_the_redis_urls_redis_py_opens_are_accepted(tmp_path: Path, url: str) -> None:
    # redis-py reads the scheme in any case: an upper-case one served before the scheme check refused it
    assert load_config(write_config(tmp_path, f"redis_url: '{url}'\n")).redis_url == url


def test_the_tenancy_docs_config_block_loads_and_names_the_redis_prefix(tmp_path: Path) -> None:
    """Two gateways on one Redis share counters unless their `redis_prefix` differs: the setting existed but
    no config example showed it, so a newcomer sharing a Redis could not find it."""
    doc = (Path(__file__).parents[3] / "docs" / "tenancy.md").read_text()
    block = doc.split("## Config\n", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    config = load_config(write_config(tmp_path, block))
    assert "redis_prefix:" in block and config.redis_prefix == "aigw:"


@pytest.mark.parametrize(("provider", "model", "extra", "modes"), [
    ("openai", "gpt-4o-mini", {}, ["chat"]),  # OpenAI's /completions refuses chat models: translated instead
    ("azure", "gpt-4o", {"api_base": "https://x.openai.azure.com"}, ["chat"]),
    ("openai", "gpt-3.5-turbo-instruct", {}, ["chat", "completions"]),
    ("openai", "davinci-002", {}, ["chat", "completions"]),
    ("openai_compatible", "llama-3", {"api_base": "http://127.0.0.1:8000/v1"}, ["chat", "completions"]),
    ("openai", "gpt-4o-mini", {"modes": ["chat", "completions"]}, ["chat", "completions"]),  # as configured
])
def test_a_deployment_serves_legacy_completions_natively_only_where_its_upstream_does(
        provider: str, model: str, extra: dict[str, object], modes: list[str]) -> None:
    d = Deployment.model_validate({"name": "m", "provider": provider, "model": model, **extra})
    assert d.modes == modes


def test_a_default_is_used_when_the_variable_is_set_but_empty(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``${PORT:-4100}`` with PORT exported empty (docker compose passes ``PORT=${PORT}`` on as empty when the host
    has none) read as "" (a 'valid integer' error on server.port), not 4100 as a shell and compose read it."""
    monkeypatch.setenv("PORT", "")
    monkeypatch.setenv("EMPTY_KEY", "")
    path = write_config(tmp_path, "server:\n  port: ${PORT:-4100}\n  master_key: ${EMPTY_KEY}\n")
    config = load_config(path)
    assert config.server.port == 4100 and config.server.master_key == ""  # no default: empty stays empty


@pytest.mark.parametrize("ref", ["${OPENAI_KEY:default}", "${OPENAI_KEY-x}", "${ OPENAI_KEY }", "${OPENAI_KEY",
                                 "${}", "${1KEY}", "sk-${OPENAI_KEY:=x}"])
def test_a_malformed_reference_is_refused_not_kept_as_literal_text(tmp_path: Path, ref: str) -> None:
    """A reference the loader did not understand stayed in the value as it was written: `${OPENAI_KEY:default}`
    went upstream as the API key (a 401 at the first call), `config check` said ok."""
    path = write_config(tmp_path, f"models:\n  - name: a\n    provider: openai\n    api_key: '{ref}'\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: models[0].api_key: ") and "${NAME:-default}" in message, message


def test_a_default_may_hold_a_reference_and_a_literal_dollar_brace_is_written_doubled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``${A:-${B:-x}}`` (as docker compose reads it) came out as the text ``${B:-x}``; ``$${`` is a literal ``${``;
    a variable's value is never read again for references."""
    monkeypatch.setenv("B", "from-b")
    monkeypatch.setenv("C", "${NOT_READ}")
    path = write_config(tmp_path, "server:\n  master_key: ${A:-${B:-x}}\n"
                                  "models:\n  - {name: a, provider: mock, api_key: '$${LIT}-${C}-${A:-${Z:-z}}'}\n")
    config = load_config(path)
    assert config.server.master_key == "from-b"
    assert config.models[0].api_key == "${LIT}-${NOT_READ}-z"


def test_an_unset_variable_in_an_unused_default_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A", "a")
    assert load_config(write_config(tmp_path, "server:\n  master_key: ${A:-${UNSET_B}}\n")).server.master_key == "a"


@pytest.mark.parametrize("base", ["localhost:8000/v1", "127.0.0.1:11434/v1", "api.openai.com/v1", "ftp://h/v1",
                                  "http:///v1", "https://my host/v1", "https://h:port/v1"])
def test_an_api_base_that_is_no_http_url_fails_at_load_naming_the_field(tmp_path: Path, base: str) -> None:
    """`config check` said ok and every call to the model was a 502 'upstream connection failed:
    NonHttpUrlClientError', after its retries (a URL without http:// is the usual slip)."""
    path = write_config(tmp_path, f"models:\n  - {{name: a, provider: openai_compatible, api_base: '{base}'}}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "  models[0].api_base: must be an http:// or https:// URL" in str(exc.value), str(exc.value)


@pytest.mark.parametrize("base", ["http://127.0.0.1:11434/v1", "https://x.openai.azure.com", "HTTPS://api.groq.com/openai/v1",
                                  "http://[::1]:8000/v1"])
def test_the_api_bases_an_upstream_is_reached_at_are_accepted(tmp_path: Path, base: str) -> None:
    path = write_config(tmp_path, f"models:\n  - {{name: a, provider: openai_compatible, api_base: '{base}'}}\n")
    assert load_config(path).models[0].api_base == base


def test_a_base_url_from_the_environment_that_is_no_http_url_names_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "localhost:8080/v1")
    with pytest.raises(ConfigError, match=r"^\(defaults\): OPENAI_BASE_URL: must be an http:// or https:// URL"):
        load_config()


@pytest.mark.parametrize(("data", "says"), [
    ("server:\n  host: 127.0.0.1 # café\n  port: 4000\n".encode("latin-1"), ":2:24: not UTF-8 text (byte 0xe9)"),
    ("server:\n  port: 4000\n".encode("utf-16"), ": not UTF-8 text (it is UTF-16"),
])
def test_a_file_that_is_not_utf8_is_one_line_naming_where(tmp_path: Path, data: bytes, says: str) -> None:
    """A config saved as Latin-1 (an accent in a comment) or UTF-16 (PowerShell's `>`) made `aigw serve` and
    `aigw db upgrade` die in a UnicodeDecodeError traceback."""
    path = tmp_path / "aigw.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"{path}{says}") and "save it as UTF-8" in str(exc.value), str(exc.value)


@pytest.mark.parametrize(("text", "says"), [
    ("models: &m\n  - {name: a, provider: mock, headers: *m}\n",
     ": models[0].headers: a YAML alias inside the node its anchor marks"),
    ("? [a, b]\n: 1\n", ":1:3: not valid YAML: found unhashable key"),
])
def test_yaml_the_loader_cannot_take_is_one_line_not_a_traceback(tmp_path: Path, text: str, says: str) -> None:
    """A self-referencing alias ended in a RecursionError traceback, a list used as a key in a TypeError one."""
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"{path}{says}"), str(exc.value)


def test_a_bad_value_from_a_variable_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The value is not echoed (it may be a secret), so "models[0].api_base: must be an http:// ... URL" for a
    file reading ${LLM_BASE} left the operator to guess where the value came from."""
    monkeypatch.setenv("LLM_BASE", "llm.internal:8000/v1")
    monkeypatch.setenv("PORT", "80a")
    path = write_config(tmp_path, "server:\n  port: ${PORT:-4000}\n  host: ${HOST:-127.0.0.1}\n"
                                  "models:\n  - {name: a, provider: openai_compatible, api_base: '${LLM_BASE}'}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    lines = str(exc.value).splitlines()
    assert any(line.startswith("  server.port: ") and line.endswith(" (set by PORT)") for line in lines), lines
    assert any(line.startswith("  models[0].api_base: must be") and line.endswith(" (set by LLM_BASE)")
               for line in lines), lines
    monkeypatch.setenv("PORT", "")  # the default is the file's own text: no variable to name
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, "server:\n  port: ${PORT:-80a}\n"))
    assert "set by" not in str(exc.value)


def test_a_pipeline_stage_listed_twice_is_refused_naming_it(tmp_path: Path) -> None:
    """`pipeline: [..., limits, limits, ...]` ran the stage twice: every request counted twice against a key's
    rpm (a key allowed 2 a minute was refused its second call), a budget would be reserved twice."""
    path = write_config(tmp_path, "pipeline: [observe, validate, limits, limits, budget, accounting]\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "  pipeline: 'limits' is listed twice (pipeline[2] and pipeline[3]); a stage runs once" in str(exc.value)
    assert load_config(write_config(tmp_path, "pipeline: [observe, limits, accounting]\n")).pipeline == [
        "observe", "limits", "accounting"]


@pytest.mark.parametrize(("host", "says"), [
    ("0.0.0.0:4000", "the port goes in server.port"), ("http://localhost", "no scheme"),
    ("not a host!", "an IP address or a host name"), ("", "an IP address or a host name"),
])
def test_a_host_that_cannot_be_bound_fails_at_load_naming_it(tmp_path: Path, host: str, says: str) -> None:
    """`host: 0.0.0.0:4000` or `http://localhost` passed config check; serve then said only "cannot listen on
    0.0.0.0:4000:0: unknown error -2"."""
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, f"server: {{host: '{host}'}}\n"))
    assert "  server.host: must be an IP address or a host name" in str(exc.value) and says in str(exc.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "gw-1.internal", "fe80::1%eth0"])
def test_the_hosts_a_server_binds_are_accepted(tmp_path: Path, host: str) -> None:
    assert load_config(write_config(tmp_path, f"server: {{host: '{host}', master_key: k}}\n")).server.host == host


def test_a_section_left_empty_means_its_defaults(tmp_path: Path) -> None:
    """A section whose keys are all commented out is null to YAML: `server:` so was taken as its defaults, but
    `tenancy:`, `routing:` or `observability:` failed with "Input should be a valid dictionary or instance of
    TenancyConfig"."""
    path = write_config(tmp_path, "server:\ntenancy:\n  # enabled: false\nobservability:\ncircuit_breaker:\n"
                                  "models:\n  - name: a\n    provider: mock\n    headers:\n    mock:\n"
                                  "routing:\n  a:\n    # fallbacks: [b]\n")
    config = load_config(path)
    assert config.tenancy.enabled and config.circuit_breaker.failures == 5 and config.models[0].headers == {}
    assert config.routing["a"].num_retries == 2
    with pytest.raises(ConfigError, match=r"server\.port: "):  # a setting left empty is still a mistake
        load_config(write_config(tmp_path, "server:\n  port:\n"))
    assert load_config(write_config(tmp_path, "cache:\n")).cache is None  # where empty already meant off
