"""Gateway configuration as code: the YAML file of DESIGN.md, in and out.

Parsing keeps each value's line, so a bad file is refused with a message
naming the line and the field (``line 7: providers.google.protocol: ...``),
and nothing is changed. Applying is idempotent: an unchanged row is not saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from routing.models import DataRegion, Environment, Organisation, Protocol, Strategy

PROVIDER_FIELDS = {
    "protocol",
    "base_url",
    "api_key_env",
    "api_key",
    "credentials",
    "vendor",
    "priority",
    "baa_signed",
    "data_region",
    "connect_timeout",
    "read_timeout",
    "enabled",
}
MODEL_FIELDS = {
    "provider",
    "name",
    "input_usd_per_mtok",
    "output_usd_per_mtok",
    "cached_input_usd_per_mtok",
    "context_window",
    "max_output_tokens",
    "enabled",
    "rpm",
    "tpm",
    "max_concurrency",
}
CREDENTIAL_FIELDS = {"environment", "label", "api_key_env", "api_key", "rotation_days", "enabled"}
ROUTE_FIELDS = {"chain", "environments", "strategy", "quality_floor", "latency_target_ms"}
BUDGET_FIELDS = {"scope", "ref", "period", "amount_usd", "hard", "alert_at"}
LIMITS_FIELDS = {"keys"}
KEY_LIMIT_FIELDS = {"rpm", "tpm", "max_concurrent", "burst"}
ORGANISATION_FIELDS = {"industry", "languages", "keys"}
TOP_LEVEL = {
    "providers",
    "models",
    "routes",
    "budgets",
    "limits",
    "organisations",
    "rules",
    "rollouts",
    "experiments",
}
KNOWN_VENDORS = {"openai", "google", "anthropic"}


class ConfigError(Exception):
    def __init__(self, line: int | None, where: str, message: str) -> None:
        self.line, self.where = line, where
        prefix = f"line {line}: " if line else ""
        super().__init__(f"{prefix}{where}: {message}")


class Node:
    """A parsed YAML value with the line it started on (1-based)."""

    def __init__(self, value: Any, line: int) -> None:
        self.value, self.line = value, line


class _Loader(yaml.SafeLoader):
    pass


def _construct(loader: _Loader, node: yaml.Node) -> Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        mapping = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            mapping[str(key)] = _construct(loader, value_node)
        return Node(mapping, line)
    if isinstance(node, yaml.SequenceNode):
        return Node([_construct(loader, item) for item in node.value], line)
    return Node(loader.construct_object(node), line)


@dataclass
class CredentialSpec:
    environment: str
    label: str = ""
    api_key_env: str = ""
    api_key: str = field(default="", repr=False)  # stored encrypted, never exported
    rotation_days: int = 30
    enabled: bool = True
    line: int = 0

    @property
    def keeps_stored_key(self) -> bool:
        """No source given: keep the key already stored (what export_config writes)."""
        return not self.api_key and not self.api_key_env


@dataclass
class ProviderSpec:
    name: str
    protocol: str
    base_url: str
    credentials: list[CredentialSpec] = field(default_factory=list)
    vendor: str = ""
    priority: int = 100
    baa_signed: bool = False
    data_region: str = DataRegion.US
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    enabled: bool = True
    line: int = 0


@dataclass
class ModelSpec:
    provider: str
    name: str
    input_usd_per_mtok: Decimal | None = None
    output_usd_per_mtok: Decimal | None = None
    cached_input_usd_per_mtok: Decimal | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    enabled: bool = True
    rpm: int | None = None  # our own limits under the provider's quota; None: none
    tpm: int | None = None
    max_concurrency: int | None = None  # requests in flight at once; None: no cap
    line: int = 0


@dataclass
class RouteSpec:
    name: str
    chain: list[tuple[str, str]]
    environments: list[str] = field(default_factory=lambda: list(Environment.values))
    strategy: str = "ordered"
    quality_floor: int | None = None
    latency_target_ms: int | None = None  # the quality rule "slow"; None: no target
    line: int = 0


@dataclass
class BudgetSpec:
    scope: str
    ref: str
    period: str
    amount_usd: Decimal
    hard: bool
    alert_at: list[int]
    line: int = 0


@dataclass
class KeyLimitSpec:
    """The rate limits of every active client key of one name (keys are not in the file)."""

    name: str
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    burst: int = 0
    line: int = 0


@dataclass
class OrganisationSpec:
    """A customer, its industry and languages, and the names of its client keys (which
    are not in the file: every active key of each name is given the organisation)."""

    name: str
    industry: str = ""
    languages: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    line: int = 0


@dataclass
class GatewayConfig:
    providers: list[ProviderSpec] = field(default_factory=list)
    models: list[ModelSpec] = field(default_factory=list)
    routes: list[RouteSpec] = field(default_factory=list)
    budgets: list[BudgetSpec] = field(default_factory=list)
    key_limits: list[KeyLimitSpec] = field(default_factory=list)
    # routing.experiments.config: RolloutSpec and ExperimentSpec.
    rollouts: list[Any] = field(default_factory=list)
    experiments: list[Any] = field(default_factory=list)
    rules: list[Any] = field(default_factory=list)  # routing.rules_config.RuleSpec
    organisations: list[OrganisationSpec] = field(default_factory=list)


def parse(text: str) -> GatewayConfig:
    loader = _Loader(text)
    try:
        document = loader.get_single_node()
        if document is None:
            raise ConfigError(None, "file", "is empty")
        root = _construct(loader, document)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError(line, "file", f"not valid YAML ({exc.problem})") from None
    finally:
        loader.dispose()
    top = _mapping(root, "file")
    for key, node in top.items():
        if key not in TOP_LEVEL:
            raise ConfigError(
                node.line, key, f"unknown section; expected {', '.join(sorted(TOP_LEVEL))}"
            )
    config = GatewayConfig()
    providers = _mapping(top["providers"], "providers") if "providers" in top else {}
    for priority, (name, node) in enumerate(providers.items(), start=1):
        config.providers.append(_provider(name, node, priority * 10))
    known = {p.name for p in config.providers}
    for index, node in enumerate(_sequence(top.get("models"), "models")):
        config.models.append(_model(node, f"models[{index}]", known))
    deployments = {(m.provider, m.name) for m in config.models}
    routes = _mapping(top["routes"], "routes") if "routes" in top else {}
    for name, node in routes.items():
        config.routes.append(_route(name, node, deployments))
    for index, node in enumerate(_sequence(top.get("budgets"), "budgets")):
        config.budgets.append(_budget(node, f"budgets[{index}]"))
    if "limits" in top:
        limits = _fields(top["limits"], "limits", LIMITS_FIELDS)
        keys = _mapping(limits["keys"], "limits.keys") if "keys" in limits else {}
        for name, node in keys.items():
            config.key_limits.append(_key_limits(name, node))
    organisations = (
        _mapping(top["organisations"], "organisations") if "organisations" in top else {}
    )
    for name, node in organisations.items():
        config.organisations.append(_organisation(name, node))
    if "rules" in top:
        from routing.rules_config import parse_rules

        config.rules = parse_rules(_sequence(top["rules"], "rules"), config)
    from routing.experiments import config as arms  # it reads nodes with this module's helpers

    arms.parse_into(config, top, deployments)
    return config


def _mapping(node: Node, where: str) -> dict[str, Node]:
    if not isinstance(node.value, dict):
        raise ConfigError(node.line, where, "must be a mapping (key: value)")
    return node.value


def _sequence(node: Node | None, where: str) -> list[Node]:
    if node is None:
        return []
    if not isinstance(node.value, list):
        raise ConfigError(node.line, where, "must be a list")
    return node.value


def _fields(node: Node, where: str, allowed: set[str]) -> dict[str, Node]:
    fields = _mapping(node, where)
    for key, value in fields.items():
        if key not in allowed:
            raise ConfigError(
                value.line,
                f"{where}.{key}",
                f"unknown field; expected one of {', '.join(sorted(allowed))}",
            )
    return fields


def _str(
    fields: dict[str, Node],
    key: str,
    where: str,
    required: bool = False,
    default: str = "",
    line: int | None = None,
) -> str:
    """A string field; ``line`` (the enclosing entry's) names where a missing one belongs."""
    node = fields.get(key)
    if node is None:
        if required:
            raise ConfigError(line, f"{where}.{key}", "is required")
        return default
    if not isinstance(node.value, str) or (required and not node.value):
        raise ConfigError(node.line, f"{where}.{key}", "must be a non-empty string")
    return node.value


def _choice(
    fields: dict[str, Node],
    key: str,
    where: str,
    choices: list[str],
    default: str = "",
    line: int | None = None,
) -> str:
    """One of ``choices``; required when there is no default."""
    value = _str(fields, key, where, required=not default, default=default, line=line)
    if value not in choices:
        raise ConfigError(
            fields[key].line, f"{where}.{key}", f"must be one of {', '.join(choices)}"
        )
    return value


def _key_source(fields: dict[str, Node], where: str) -> tuple[str, str]:
    """(api_key_env, api_key): where a key comes from, one or the other."""
    if "api_key" in fields and "api_key_env" in fields:
        raise ConfigError(
            fields["api_key"].line, f"{where}.api_key", "give api_key or api_key_env, not both"
        )
    return _str(fields, "api_key_env", where), _str(fields, "api_key", where)


def _decimal(fields: dict[str, Node], key: str, where: str) -> Decimal | None:
    node = fields.get(key)
    if node is None:
        return None
    if isinstance(node.value, float):
        raise ConfigError(
            node.line, f"{where}.{key}", 'write money as a quoted string ("0.06"), not a float'
        )
    try:
        value = Decimal(str(node.value))
    except InvalidOperation:
        raise ConfigError(node.line, f"{where}.{key}", f"{node.value!r} is not a number") from None
    if value < 0:
        raise ConfigError(node.line, f"{where}.{key}", "must not be negative")
    return value


def _number(fields: dict[str, Node], key: str, where: str, kind: type, default: Any) -> Any:
    node = fields.get(key)
    if node is None:
        return default
    if isinstance(node.value, bool) or not isinstance(node.value, (int, float)) or node.value <= 0:
        raise ConfigError(node.line, f"{where}.{key}", "must be a positive number")
    if kind is int and not isinstance(node.value, int):
        raise ConfigError(node.line, f"{where}.{key}", "must be a whole number")
    return kind(node.value)


def _bool(fields: dict[str, Node], key: str, where: str, default: bool) -> bool:
    node = fields.get(key)
    if node is None:
        return default
    if not isinstance(node.value, bool):
        raise ConfigError(node.line, f"{where}.{key}", "must be true or false")
    return node.value


def _provider(name: str, node: Node, priority: int) -> ProviderSpec:
    where = f"providers.{name}"
    fields = _fields(node, where, PROVIDER_FIELDS)
    protocol = _choice(fields, "protocol", where, Protocol.values, line=node.line)
    base_url = _str(fields, "base_url", where, required=True, line=node.line)
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(
            fields["base_url"].line, f"{where}.base_url", "must start with http:// or https://"
        )
    if "credentials" in fields and ("api_key" in fields or "api_key_env" in fields):
        node_ = fields.get("api_key") or fields["api_key_env"]
        raise ConfigError(
            node_.line, where, "give credentials, or api_key/api_key_env for every environment"
        )
    if "credentials" in fields:
        credentials = [
            _credential(item, f"{where}.credentials[{index}]")
            for index, item in enumerate(_sequence(fields["credentials"], f"{where}.credentials"))
        ]
    elif "api_key" in fields or "api_key_env" in fields:
        # Shorthand: the same key for every environment (a demo, a single-stage setup).
        api_key_env, api_key = _key_source(fields, where)
        credentials = [
            CredentialSpec(env, "", api_key_env, api_key, line=node.line)
            for env in Environment.values
        ]
    else:
        credentials = []
    seen: set[tuple[str, str]] = set()
    for credential in credentials:
        if (credential.environment, credential.label) in seen:
            raise ConfigError(
                credential.line,
                f"{where}.credentials",
                f"two credentials for {credential.environment} labelled "
                f"'{credential.label}'; give each a distinct label",
            )
        seen.add((credential.environment, credential.label))
    vendor = _str(fields, "vendor", where, default=name if name in KNOWN_VENDORS else "")
    region = _choice(fields, "data_region", where, DataRegion.values, default=DataRegion.US)
    return ProviderSpec(
        name=name,
        protocol=protocol,
        base_url=base_url,
        credentials=credentials,
        vendor=vendor,
        priority=_number(fields, "priority", where, int, priority),
        baa_signed=_bool(fields, "baa_signed", where, False),
        data_region=region,
        connect_timeout=_number(fields, "connect_timeout", where, float, 5.0),
        read_timeout=_number(fields, "read_timeout", where, float, 60.0),
        enabled=_bool(fields, "enabled", where, True),
        line=node.line,
    )


def _credential(node: Node, where: str) -> CredentialSpec:
    fields = _fields(node, where, CREDENTIAL_FIELDS)
    api_key_env, api_key = _key_source(fields, where)
    environment = _choice(fields, "environment", where, Environment.values, line=node.line)
    rotation_node = fields.get("rotation_days")
    rotation_days = 30
    if rotation_node is not None:
        if isinstance(rotation_node.value, bool) or not isinstance(rotation_node.value, int):
            raise ConfigError(
                rotation_node.line, f"{where}.rotation_days", "must be a whole number of days"
            )
        if not 0 <= rotation_node.value <= 3650:
            raise ConfigError(
                rotation_node.line, f"{where}.rotation_days", "must be 0 (never) to 3650"
            )
        rotation_days = rotation_node.value
    return CredentialSpec(
        environment=environment,
        label=_str(fields, "label", where),
        api_key_env=api_key_env,
        api_key=api_key,
        rotation_days=rotation_days,
        enabled=_bool(fields, "enabled", where, True),
        line=node.line,
    )


def _model(node: Node, where: str, providers: set[str]) -> ModelSpec:
    fields = _fields(node, where, MODEL_FIELDS)
    provider = _str(fields, "provider", where, required=True, line=node.line)
    if provider not in providers:
        raise ConfigError(
            fields["provider"].line,
            f"{where}.provider",
            f"'{provider}' is not a provider in this file",
        )
    return ModelSpec(
        provider=provider,
        name=_str(fields, "name", where, required=True, line=node.line),
        input_usd_per_mtok=_decimal(fields, "input_usd_per_mtok", where),
        output_usd_per_mtok=_decimal(fields, "output_usd_per_mtok", where),
        cached_input_usd_per_mtok=_decimal(fields, "cached_input_usd_per_mtok", where),
        context_window=_number(fields, "context_window", where, int, None),
        max_output_tokens=_number(fields, "max_output_tokens", where, int, None),
        enabled=_bool(fields, "enabled", where, True),
        rpm=_number(fields, "rpm", where, int, None),
        tpm=_number(fields, "tpm", where, int, None),
        max_concurrency=_number(fields, "max_concurrency", where, int, None),
        line=node.line,
    )


def _key_limits(name: str, node: Node) -> KeyLimitSpec:
    where = f"limits.keys.{name}"
    fields = _fields(node, where, KEY_LIMIT_FIELDS)
    burst_node = fields.get("burst")
    burst = 0
    if burst_node is not None:
        if (
            isinstance(burst_node.value, bool)
            or not isinstance(burst_node.value, int)
            or burst_node.value < 0
        ):
            raise ConfigError(
                burst_node.line, f"{where}.burst", "must be a whole number, 0 or more"
            )
        if "rpm" not in fields:
            raise ConfigError(burst_node.line, f"{where}.burst", "is on top of rpm; give rpm too")
        burst = burst_node.value
    if not fields:
        raise ConfigError(node.line, where, f"give some of {', '.join(sorted(KEY_LIMIT_FIELDS))}")
    return KeyLimitSpec(
        name=name,
        rpm=_number(fields, "rpm", where, int, None),
        tpm=_number(fields, "tpm", where, int, None),
        max_concurrent=_number(fields, "max_concurrent", where, int, None),
        burst=burst,
        line=node.line,
    )


def _organisation(name: str, node: Node) -> OrganisationSpec:
    where = f"organisations.{name}"
    fields = _fields(node, where, ORGANISATION_FIELDS) if node.value is not None else {}
    industry = ""
    if "industry" in fields:
        industry = _choice(fields, "industry", where, list(Organisation.Industry.values))
    languages = _strings(fields, "languages", where)
    for code in languages:
        if len(code) != 2 or not code.isalpha() or not code.islower():
            raise ConfigError(
                fields["languages"].line,
                f"{where}.languages",
                f"{code!r} is not a two-letter lower-case ISO 639-1 code",
            )
    return OrganisationSpec(
        name=name,
        industry=industry,
        languages=languages,
        keys=_strings(fields, "keys", where),
        line=node.line,
    )


def _strings(fields: dict[str, Node], key: str, where: str) -> list[str]:
    values = []
    for item in _sequence(fields.get(key), f"{where}.{key}"):
        if not isinstance(item.value, str) or not item.value:
            raise ConfigError(item.line, f"{where}.{key}", "must be a list of non-empty strings")
        values.append(item.value)
    return values


def _route(name: str, node: Node, deployments: set[tuple[str, str]]) -> RouteSpec:
    where = f"routes.{name}"
    environments = list(Environment.values)
    latency_target_ms = None
    chain_node = node
    strategy, quality_floor = "ordered", None
    if isinstance(node.value, dict):
        # The long form: {chain: [...], environments: [prod, staging]}.
        fields = _fields(node, where, ROUTE_FIELDS)
        if "chain" not in fields:
            raise ConfigError(node.line, f"{where}.chain", "is required")
        chain_node = fields["chain"]
        if "environments" in fields:
            environments = [
                item.value for item in _sequence(fields["environments"], f"{where}.environments")
            ]
            if not environments or not set(environments) <= set(Environment.values):
                raise ConfigError(
                    fields["environments"].line,
                    f"{where}.environments",
                    f"must list some of {', '.join(Environment.values)}",
                )
        latency_target_ms = _number(fields, "latency_target_ms", where, int, None)
        if "strategy" in fields:
            strategy = _choice(fields, "strategy", where, list(Strategy.values))
        if "quality_floor" in fields:
            quality_floor = _number(fields, "quality_floor", where, int, None)
            if quality_floor > 100:
                raise ConfigError(
                    fields["quality_floor"].line, f"{where}.quality_floor", "must be 1 to 100"
                )
        where = f"{where}.chain"
    chain = []
    for index, item in enumerate(_sequence(chain_node, where)):
        label = item.value
        provider, _, model = label.partition("/") if isinstance(label, str) else ("", "", "")
        if not model:
            raise ConfigError(item.line, f"{where}[{index}]", "must be 'provider/model'")
        if (provider, model) not in deployments:
            raise ConfigError(
                item.line, f"{where}[{index}]", f"'{label}' is not listed under models"
            )
        chain.append((provider, model))
    if not chain:
        raise ConfigError(node.line, where, "needs at least one 'provider/model'")
    return RouteSpec(
        name=name,
        chain=chain,
        environments=environments,
        latency_target_ms=latency_target_ms,
        strategy=strategy,
        quality_floor=quality_floor,
        line=node.line,
    )


def _budget(node: Node, where: str) -> BudgetSpec:
    fields = _fields(node, where, BUDGET_FIELDS)
    scope = _str(fields, "scope", where, required=True, line=node.line)
    if scope not in ("global", "key", "route", "provider"):
        raise ConfigError(
            fields["scope"].line, f"{where}.scope", "must be global, key, route or provider"
        )
    ref = _str(fields, "ref", where)
    if scope != "global" and not ref:
        raise ConfigError(node.line, f"{where}.ref", f"names the {scope} the budget applies to")
    period = _str(fields, "period", where, default="monthly")
    if period not in ("monthly", "daily"):
        raise ConfigError(fields["period"].line, f"{where}.period", "must be monthly or daily")
    amount = _decimal(fields, "amount_usd", where)
    if amount is None:
        raise ConfigError(node.line, f"{where}.amount_usd", "is required")
    alert_node = fields.get("alert_at")
    alert_at = [70, 85, 95]
    if alert_node is not None:
        values = [item.value for item in _sequence(alert_node, f"{where}.alert_at")]
        if not all(isinstance(v, int) and 0 < v <= 100 for v in values):
            raise ConfigError(
                alert_node.line, f"{where}.alert_at", "must be percentages from 1 to 100"
            )
        alert_at = sorted(values)
    return BudgetSpec(
        scope, ref, period, amount, _bool(fields, "hard", where, False), alert_at, node.line
    )
