"""Load and validate `trunkline.toml` once, reporting every mistake as `file: key: why`.

The loader is the only place that reads the config file and the environment (passed in as a mapping);
everything downstream receives a frozen `Config`.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trunkline.config.cores import speech_workers, usable_cores
from trunkline.config.model import (
    AGENT_CALLS_PER_ASR_WORKER,
    CALL_HANDLERS,
    SUPPORTED_CODECS,
    Config,
    IpNetwork,
    LogConfig,
    MediaConfig,
    ServerConfig,
    SipConfig,
    StoreConfig,
    TrunkConfig,
)

E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """The config is invalid; `problems` lists each one as `file: key: why`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Reader:
    """Typed access to one TOML table that records problems instead of raising."""

    def __init__(self, file: str, prefix: str, table: Mapping[str, Any], problems: list[str]) -> None:
        self.file, self.prefix, self.table, self.problems = file, prefix, table, problems
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def problem(self, name: str, why: str) -> None:
        self.problems.append(f"{self.file}: {self.key(name)}: {why}")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.seen.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(_type_name(k) for k in kinds)
            self.problem(name, f"must be {names}, got {_type_name(type(value))} {value!r}")
            return default
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.get(name, int, default)
        if not low <= value <= high:
            self.problem(name, f"must be between {low} and {high}, got {value}")
            return default
        return int(value)

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.get(name, (int, float), default)
        if not low <= value <= high:
            self.problem(name, f"must be between {low} and {high}, got {value}")
            return default
        return float(value)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            self.problem(name, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return str(value)

    def host(self, name: str, default: str | None) -> str | None:
        value = self.get(name, str, default)
        if value is not None and not _valid_host(value):
            self.problem(name, f"is not an IP address or host name: {value!r}")
            return default
        return value

    def env_name(self, name: str, default: str | None) -> str | None:
        value = self.get(name, str, default)
        if value is not None and not ENV_NAME.match(value):
            # the value is never echoed: an operator may have pasted the secret itself here
            self.problem(name, "must be the name of an environment variable (A-Z, 0-9, _), not a value")
            return default
        return value

    def finish(self) -> None:
        for name in sorted(set(self.table) - self.seen):
            self.problem(name, "unknown key")


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false", list: "a list"}.get(
        kind, kind.__name__
    )


def _valid_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(re.match(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*$", value))


def load_config(path: str | Path, environ: Mapping[str, str], require_secrets: bool = True) -> Config:
    """Read, validate and freeze the config at `path`; raise ConfigError listing every problem.
    With `require_secrets=False` (read-only tools such as `status`) unset password variables are no error."""
    path = Path(path)
    file = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{file}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{file}: cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: not valid TOML: {exc}"]) from None
    return parse_config(data, file, environ, base_dir=path.parent, require_secrets=require_secrets)


def parse_config(
    data: Mapping[str, Any],
    file: str,
    environ: Mapping[str, str],
    base_dir: Path,
    require_secrets: bool = True,
) -> Config:
    """Validate an already-parsed TOML document (the loader's core, also used by tests)."""
    problems: list[str] = []
    top = _Reader(file, "", data, problems)
    tables = {name: _table(top, name) for name in ("sip", "media", "store", "log", "server")}
    trunk_list = top.get("trunk", list, [])
    top.finish()
    sip = _sip(_Reader(file, "sip", tables["sip"], problems))
    media = _media(_Reader(file, "media", tables["media"], problems))
    store = _store(_Reader(file, "store", tables["store"], problems), environ, base_dir)
    log = _log(_Reader(file, "log", tables["log"], problems))
    server = _server(_Reader(file, "server", tables["server"], problems), base_dir)
    trunks = _trunks(file, trunk_list, environ, problems, require_secrets)
    if problems:
        raise ConfigError(problems)
    return Config(Path(file), sip, media, store, log, server, trunks)


def _table(top: _Reader, name: str) -> Mapping[str, Any]:
    value = top.get(name, dict, {})
    return value if isinstance(value, dict) else {}


def _sip(r: _Reader) -> SipConfig:
    d = SipConfig()
    cfg = SipConfig(
        listen_host=r.host("listen_host", d.listen_host) or d.listen_host,
        listen_port=r.integer("listen_port", d.listen_port, 1, 65535),
        public_host=r.host("public_host", None),
        user_agent=r.get("user_agent", str, d.user_agent),
        unknown_source=r.choice("unknown_source", d.unknown_source, ("reject", "drop")),
        retry_after_s=r.integer("retry_after_s", d.retry_after_s, 1, 86400),
        max_call_duration_s=r.number("max_call_duration_s", d.max_call_duration_s, 1, 86400),
        rtp_timeout_s=r.number("rtp_timeout_s", d.rtp_timeout_s, 1, 3600),
        ring_timeout_s=r.number("ring_timeout_s", d.ring_timeout_s, 1, 600),
        answer_delay_s=r.number("answer_delay_s", d.answer_delay_s, 0, 60),
    )
    r.finish()
    return cfg


def _media(r: _Reader) -> MediaConfig:
    d = MediaConfig()
    low = r.integer("rtp_port_min", d.rtp_port_min, 1024, 65534)
    high = r.integer("rtp_port_max", d.rtp_port_max, 1025, 65535)
    if low >= high:
        r.problem("rtp_port_max", f"must be greater than rtp_port_min ({low}), got {high}")
    elif high - low < 3:
        r.problem("rtp_port_max", "the RTP range must hold at least two even ports")
    cfg = MediaConfig(
        rtp_host=r.host("rtp_host", d.rtp_host) or d.rtp_host,
        public_host=r.host("public_host", None),
        rtp_port_min=low,
        rtp_port_max=high,
        ptime_ms=_ptime(r),
    )
    r.finish()
    return cfg


def _ptime(r: _Reader) -> int:
    value = r.integer("ptime_ms", 20, 10, 60)
    if value % 10:
        r.problem("ptime_ms", f"must be a multiple of 10 ms, got {value}")
        return 20
    return value


def _store(r: _Reader, environ: Mapping[str, str], base_dir: Path) -> StoreConfig:
    d = StoreConfig()
    dsn_env = r.env_name("dsn_env", d.dsn_env) or d.dsn_env
    spool = r.get("spool_dir", str, None)
    r.finish()
    return StoreConfig(
        dsn_env=dsn_env, dsn=environ.get(dsn_env), spool_dir=base_dir / spool if spool else None
    )


def _log(r: _Reader) -> LogConfig:
    cfg = LogConfig(
        level=r.choice("level", "info", LOG_LEVELS),
        json=r.get("json", bool, False),
        log_pii=r.get("log_pii", bool, False),
    )
    r.finish()
    return cfg


def _server(r: _Reader, base_dir: Path) -> ServerConfig:
    d = ServerConfig()
    state_dir = r.get("state_dir", str, str(d.state_dir))
    tenants_dir = r.get("tenants_dir", str, str(d.tenants_dir))
    greeting = r.get("greeting_wav", str, None)
    call_handler = r.choice("call_handler", d.call_handler, CALL_HANDLERS)
    default_cap = default_max_calls(call_handler)
    cfg = ServerConfig(
        state_dir=base_dir / state_dir,
        tenants_dir=base_dir / tenants_dir,
        drain_timeout_s=r.number("drain_timeout_s", d.drain_timeout_s, 0, 86400),
        greeting_wav=base_dir / greeting if greeting else None,
        call_handler=call_handler,
        max_calls=r.integer("max_calls", 1, 1, 100000) if "max_calls" in r.table else default_cap,
    )
    r.finish()
    return cfg


def default_max_calls(call_handler: str) -> int | None:
    """The process-wide cap when the file sets none: AGENT_CALLS_PER_ASR_WORKER per speech-recognition worker
    for the agent (its speech models are CPU-bound), none for the light "record" trunk check."""
    if call_handler != "agent":
        return None
    return AGENT_CALLS_PER_ASR_WORKER * speech_workers(usable_cores())


def _trunks(
    file: str, items: list[Any], environ: Mapping[str, str], problems: list[str], require_secrets: bool
) -> tuple[TrunkConfig, ...]:
    trunks: list[TrunkConfig] = []
    names: set[str] = set()
    owners: dict[str, str] = {}
    for index, item in enumerate(items):
        prefix = f"trunk[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{file}: {prefix}: must be a table ([[trunk]])")
            continue
        trunk = _trunk(_Reader(file, prefix, item, problems), environ, require_secrets)
        if trunk is None:
            continue
        if trunk.name in names:
            problems.append(f"{file}: {prefix}.name: duplicate trunk name {trunk.name!r}")
        names.add(trunk.name)
        for did, _tenant in trunk.dids:
            if did in owners:
                problems.append(f"{file}: {prefix}.dids: {did} is already routed by trunk {owners[did]!r}")
            owners[did] = trunk.name
        trunks.append(trunk)
    return tuple(trunks)


def _trunk(r: _Reader, environ: Mapping[str, str], require_secrets: bool) -> TrunkConfig | None:
    d = TrunkConfig(name="")
    name = r.get("name", str, "")
    if not name:
        r.problem("name", "is required")
    elif not NAME.match(name):
        r.problem("name", f"must be letters, digits, '_', '.', '-' (at most 63), got {name!r}")
    host = r.host("host", None)
    register = r.get("register", bool, False)
    username = r.get("username", str, None)
    password_env = r.env_name("password_env", None)
    if "password" in r.table:
        r.seen.add("password")
        r.problem("password", "passwords are never stored in the file; set password_env to a variable name")
    password = _password(r, password_env, environ, require_secrets)
    if register and host is None:
        r.problem("register", "needs host (the registrar) to be set")
    if register and (username is None or password_env is None):
        r.problem("register", "needs username and password_env")
    trunk = TrunkConfig(
        name=name,
        host=host,
        port=r.integer("port", d.port, 1, 65535),
        domain=r.host("domain", None),
        username=username,
        password_env=password_env,
        password=password,
        register=register,
        register_expires_s=r.integer("register_expires_s", d.register_expires_s, 60, 86400),
        dids=_dids(r),
        allowed_sources=_sources(r, host),
        codecs=_codecs(r),
        max_calls=r.integer("max_calls", d.max_calls, 1, 100000),
        caller_id=_caller_id(r),
    )
    r.finish()
    return trunk


def _password(r: _Reader, password_env: str | None, environ: Mapping[str, str], required: bool) -> str | None:
    if password_env is None:
        return None
    value = environ.get(password_env)
    if not value and required:
        r.problem("password_env", f"environment variable {password_env} is not set or empty")
        return None
    return value


def _dids(r: _Reader) -> tuple[tuple[str, str], ...]:
    table = r.get("dids", dict, {})
    out: list[tuple[str, str]] = []
    for did, tenant in table.items():
        if not E164.match(did):
            r.problem(f"dids.{did!r}", "must be an E.164 number like +15550100")
        elif not isinstance(tenant, str) or not NAME.match(tenant):
            r.problem(f"dids.{did!r}", f"must map to a tenant id (letters, digits, _ . -), got {tenant!r}")
        else:
            out.append((did, tenant))
    return tuple(out)


def _sources(r: _Reader, host: str | None) -> tuple[IpNetwork, ...]:
    values = r.get("allowed_sources", list, None)
    if values is None:
        if host is not None and _is_ip(host):
            return (ipaddress.ip_network(host),)
        r.problem(
            "allowed_sources", "is required (the carrier's signalling addresses/CIDRs) unless host is an IP"
        )
        return ()
    nets: list[IpNetwork] = []
    for i, value in enumerate(values):
        try:
            nets.append(ipaddress.ip_network(str(value), strict=False) if isinstance(value, str) else _bad())
        except ValueError:
            r.problem(f"allowed_sources[{i}]", f"is not an IP address or CIDR: {value!r}")
    return tuple(nets)


def _bad() -> IpNetwork:
    raise ValueError("not a string")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _codecs(r: _Reader) -> tuple[str, ...]:
    values = r.get("codecs", list, list(SUPPORTED_CODECS))
    out: list[str] = []
    for i, value in enumerate(values):
        name = value.upper() if isinstance(value, str) else None
        if name not in SUPPORTED_CODECS:
            r.problem(f"codecs[{i}]", f"must be one of {', '.join(SUPPORTED_CODECS)}, got {value!r}")
        elif name in out:
            r.problem(f"codecs[{i}]", f"{name} is listed twice")
        else:
            out.append(name)
    if not values:
        r.problem("codecs", "must list at least one codec")
    return tuple(out) or SUPPORTED_CODECS


def _caller_id(r: _Reader) -> str | None:
    value = r.get("caller_id", str, None)
    if value is not None and not E164.match(value):
        r.problem("caller_id", f"must be an E.164 number like +15550100, got {value!r}")
        return None
    return value
