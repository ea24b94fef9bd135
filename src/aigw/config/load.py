"""Load the gateway's config: YAML file + environment. The only reader of os.environ.

``${NAME}`` and ``${NAME:-default}`` in any string value read the environment (the default when NAME is
unset or empty, as in a shell; ``refs.py``).
With no ``models:`` the gateway serves the mock provider's models and adds every
provider whose API key is in the environment, so a newcomer gets a working
gateway with no file at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from aigw.config.cache import setup_problem
from aigw.config.explain import describe
from aigw.config.models import Deployment, GatewayConfig
from aigw.config.refs import RefError, expand
from aigw.config.sections import fill_empty_sections
from aigw.config.urls import http_url

PURGE_LOG_ENV = "AIGW_PURGE_LOG"
COUNTER_SOCKET_ENV = "AIGW_COUNTER_SOCKET"
CACHE_REDIS_ENV = "AIGW_CACHE_REDIS_URL"
MOCK_MODELS = ("mock", "mock-large", "mock-embed")
OPENAI_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3-mini", "o4-mini")
OPENAI_EMBEDDINGS = ("text-embedding-3-small", "text-embedding-3-large")
ANTHROPIC_MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1", "claude-3-5-haiku-latest")


class ConfigError(Exception):
    """A config problem, phrased for the operator: file, field path, what was expected."""


def env(name: str, default: str = "") -> str:
    """Read one environment variable (for entry points that need a value before config)."""
    return os.environ.get(name, default)


def _substitute(value: Any, where: str, source: str, from_env: dict[str, str], inside: tuple[int, ...] = ()) -> Any:
    """``value`` with its references expanded; ``from_env`` gets each field path whose value a variable set (named
    beside its error: the value is not echoed). ``inside``: the ids of the containers it is in (a YAML alias
    may make one its own member: ``&m [*m]`` never ends)."""
    if isinstance(value, str):
        taken: list[str] = []
        try:
            out = expand(value, os.environ.get, taken)
        except RefError as exc:
            raise ConfigError(f"{source}: {where or '(top level)'}: {exc}") from None
        if taken:
            from_env[where] = ", ".join(dict.fromkeys(taken))
        return out
    if isinstance(value, dict | list):
        if id(value) in inside:
            raise ConfigError(f"{source}: {where}: a YAML alias inside the node its anchor marks (&x [... *x]): "
                              "its value would never end")
        inside = (*inside, id(value))
    if isinstance(value, dict):
        return {k: _substitute(v, f"{where}.{k}" if where else str(k), source, from_env, inside)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{where}[{i}]", source, from_env, inside) for i, v in enumerate(value)]
    return value


def format_validation_error(exc: ValidationError, source: str, from_env: dict[str, str] | None = None) -> str:
    """``from_env``: field path -> the variable that set it (the file did not), named beside its error."""
    lines = describe(exc, GatewayConfig)
    for path, name in (from_env or {}).items():
        lines = [f"{line} (set by {name})" if line.startswith(f"{path}: ") else line for line in lines]
    return "\n".join([f"{source}: invalid configuration", *(f"  {line}" for line in lines)])


def read_yaml(path: str | Path) -> dict[str, Any]:
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(_not_utf8(raw, exc, source)) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(exc, source)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _not_utf8(raw: bytes, exc: UnicodeDecodeError, source: str) -> str:
    """``FILE:LINE:COLUMN: not UTF-8 text (byte 0x..)`` (columns in bytes), or what the file is when it tells."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # PowerShell's `>` and Notepad's "Unicode"
        return f"{source}: not UTF-8 text (it is UTF-16): save it as UTF-8"
    line_start = raw.rfind(b"\n", 0, exc.start) + 1
    line = raw.count(b"\n", 0, exc.start) + 1
    where = f"{source}:{line}:{exc.start - line_start + 1}"
    return f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x}): save it as UTF-8"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if not isinstance(key, str | int | float | bool):
                continue  # a list as a key: SafeLoader's own error says it cannot be one
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep)


def _yaml_problem(exc: yaml.YAMLError, source: str) -> str:
    """``FILE:LINE:COLUMN: not valid YAML: problem`` (one line; lines and columns counted from 1)."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, started = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and started is not None and (mark is None or started.line != mark.line):
        context += f" at line {started.line + 1}"
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")


def _env_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill top-level settings from AIGW_* variables where the file is silent."""
    server = raw.setdefault("server", {}) or {}
    raw["server"] = server
    if "master_key" not in server and os.environ.get("AIGW_MASTER_KEY"):
        server["master_key"] = os.environ["AIGW_MASTER_KEY"]
    if "database_url" not in raw and os.environ.get("AIGW_DATABASE_URL"):
        raw["database_url"] = os.environ["AIGW_DATABASE_URL"]
    if "redis_url" not in raw and os.environ.get("AIGW_REDIS_URL"):
        raw["redis_url"] = os.environ["AIGW_REDIS_URL"]
    if _cache_redis_from_env(raw):
        raw["cache"]["redis_url"] = os.environ[CACHE_REDIS_ENV]
    for key in ("host", "port", "workers", "insecure"):  # set by export_for_workers
        if (value := os.environ.get(f"AIGW_SERVER_{key.upper()}")) is not None:
            server[key] = value
    if purge_log := os.environ.get(PURGE_LOG_ENV):  # workers > 1: see export_purge_log
        server.setdefault("purge_log", purge_log)
    if counter_socket := os.environ.get(COUNTER_SOCKET_ENV):  # workers > 1: see export_counter_socket
        server.setdefault("counter_socket", counter_socket)
    if mp_dir := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # workers > 1: see export_metrics_dir
        obs = raw["observability"] = raw.get("observability") or {}
        obs["metrics"] = obs.get("metrics") or {}
        obs["metrics"].setdefault("multiprocess_dir", mp_dir)
    return raw


def _cache_redis_from_env(raw: dict[str, Any]) -> bool:
    """Whether AIGW_CACHE_REDIS_URL fills ``cache.redis_url``: set, and a global ``cache:`` block that does
    not set it. Without a global block it fills nothing: making one would switch the cache on (a model's
    block alone then errs at load if it uses backend redis, see ``_check_cache``)."""
    block = raw.get("cache")
    return bool(os.environ.get(CACHE_REDIS_ENV)) and isinstance(block, dict) and "redis_url" not in block


def default_models() -> list[Deployment]:
    """The mock models, plus every provider whose key is in the environment."""
    out = [Deployment(name=n, provider="mock", model=n) for n in MOCK_MODELS[:2]]
    out.append(Deployment(name=MOCK_MODELS[2], provider="mock", model=MOCK_MODELS[2], modes=["embeddings"]))
    if key := os.environ.get("OPENAI_API_KEY"):
        base = _base_url("OPENAI_BASE_URL", "https://api.openai.com/v1")
        out += [Deployment(name=m, provider="openai", api_base=base, api_key=key) for m in OPENAI_MODELS]
        out += [
            Deployment(name=m, provider="openai", api_base=base, api_key=key, modes=["embeddings"])
            for m in OPENAI_EMBEDDINGS
        ]
    if key := os.environ.get("ANTHROPIC_API_KEY"):
        base = _base_url("ANTHROPIC_BASE_URL", "https://api.anthropic.com")
        out += [
            Deployment(name=m, provider="anthropic", api_base=base, api_key=key, modes=["chat"])
            for m in ANTHROPIC_MODELS
        ]
    key, endpoint = os.environ.get("AZURE_OPENAI_API_KEY"), os.environ.get("AZURE_OPENAI_ENDPOINT")
    if key and endpoint:
        endpoint = _base_url("AZURE_OPENAI_ENDPOINT", endpoint)
        version = os.environ.get("AZURE_OPENAI_API_VERSION", "2024-10-21")
        names = os.environ.get("AZURE_OPENAI_DEPLOYMENTS", "gpt-4o,gpt-4o-mini")
        out += [
            Deployment(
                name=f"azure/{d}", provider="azure", model=d, deployment=d,
                api_base=endpoint, api_key=key, api_version=version,
            )
            for d in (n.strip() for n in names.split(",")) if d
        ]
    return out


def _base_url(name: str, default: str) -> str:
    """The variable ``name``'s URL (``default`` when unset or empty); a ConfigError naming it when no http(s) URL."""
    value = os.environ.get(name) or default
    try:
        return http_url(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def load_config(path: str | Path | None = None, **overrides: Any) -> GatewayConfig:
    """Read, substitute, validate. Raises ConfigError naming file and field path."""
    if path is None and os.environ.get("AIGW_CONFIG"):
        path = os.environ["AIGW_CONFIG"]
    source = str(path) if path else "(defaults)"
    raw = read_yaml(path) if path else {}
    from_env: dict[str, str] = {}
    raw = _substitute(raw, "", source, from_env)
    from_env |= {f: f"AIGW_{f.upper()}" for f in ("database_url", "redis_url")
                 if f not in raw and env(f"AIGW_{f.upper()}")}
    if _cache_redis_from_env(raw):
        from_env["cache.redis_url"] = CACHE_REDIS_ENV
    raw = _env_defaults(raw)
    for key, value in overrides.items():
        if value is not None:
            raw["server"][key] = value
    raw = fill_empty_sections(raw, GatewayConfig)
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, from_env)) from None
    if not config.models:
        try:
            config.models = default_models()
        except ConfigError as exc:  # a provider's base URL in the environment
            raise ConfigError(f"{source}: {exc}") from None
    _check_models(config, source)
    _check_cache(config, source, CACHE_REDIS_ENV if from_env.get("cache.redis_url") == CACHE_REDIS_ENV else "")
    return config


def _check_models(config: GatewayConfig, source: str) -> None:
    for i, d in enumerate(config.models):
        if not d.id:
            d.id = f"{d.name}/{d.provider}/{d.model}#{i}"
        if d.provider in ("openai", "anthropic", "azure", "openai_compatible") and not d.api_base:
            if d.provider == "openai":
                d.api_base = "https://api.openai.com/v1"
            elif d.provider == "anthropic":
                d.api_base = "https://api.anthropic.com"
            else:
                raise ConfigError(f"{source}: models[{i}].api_base: required for provider {d.provider}")
        if d.provider == "azure" and not d.api_version:
            d.api_version = "2024-10-21"
    _check_routing(config, source)


def _check_cache(config: GatewayConfig, source: str, url_from: str = "") -> None:
    """Cache mistakes the config alone shows, so `config check` names them (startup checks them again).
    ``url_from``: the variable that set ``cache.redis_url``, when the file did not."""
    blocks = {name: r.cache for name, r in config.routing.items() if r.cache is not None}
    if config.cache is not None or blocks:
        embeds = {n: any("embeddings" in d.modes for d in config.models if d.name == n) for n in config.model_names()}
        if problem := setup_problem(config.cache, blocks, config.redis_url, embeds, url_from):
            raise ConfigError(f"{source}: {problem}")
        if config.cache is None and env(CACHE_REDIS_ENV) and any(b.backend == "redis" for b in blocks.values()):
            where = next(f"routing.{n}.cache" for n, b in blocks.items() if b.backend == "redis")
            raise ConfigError(f"{source}: {where}.backend: redis with {CACHE_REDIS_ENV} set, but there is no global "
                              "cache: block to hold it (cache.redis_url may only be set there), so this cache would "
                              "use redis_url: add a global cache: block or unset the variable")


def _check_routing(config: GatewayConfig, source: str) -> None:
    """Routing keys and fallback chains must name models that exist; deployment ids must be unique."""
    names = set(config.model_names())
    ids: set[str] = set()
    for i, d in enumerate(config.models):
        if d.id in ids:
            raise ConfigError(f"{source}: models[{i}].id: {d.id!r} is used by another deployment")
        ids.add(d.id)
    known = ", ".join(sorted(names)) or "(none)"
    for key, rule in config.routing.items():
        if key != "*" and key not in names:
            raise ConfigError(f"{source}: routing.{key}: no model named {key!r} in models: (known: {known})")
        for chain in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
            for j, name in enumerate(getattr(rule, chain)):
                if name not in names:
                    raise ConfigError(f"{source}: routing.{key}.{chain}[{j}]: no model named {name!r} (known: {known})")
                if name == key:
                    raise ConfigError(f"{source}: routing.{key}.{chain}[{j}]: a model cannot fall back to itself")


def export_metrics_dir(path: str) -> None:
    """``--workers N``: every worker writes its metrics to files in ``path`` (prometheus_client's
    multiprocess mode, chosen when the library is imported, so before the workers start)."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def export_purge_log(path: str) -> None:
    """``--workers N``: the workers announce cache purges to each other through the file ``path``."""
    os.environ[PURGE_LOG_ENV] = path


def export_counter_socket(path: str) -> None:
    """``--workers N`` without Redis: the workers keep their rate-limit and budget counters in the parent,
    reached through the Unix socket ``path`` (stores/counter_host.py)."""
    os.environ[COUNTER_SOCKET_ENV] = path


def export_for_workers(path: str | None, **overrides: Any) -> None:
    """Hand the CLI's choices to worker processes, which re-read config through the env."""
    if path:
        os.environ["AIGW_CONFIG"] = str(Path(path).resolve())
    for key, value in overrides.items():
        if value is not None:
            os.environ[f"AIGW_SERVER_{key.upper()}"] = str(value)
