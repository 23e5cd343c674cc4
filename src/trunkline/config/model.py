"""Trunkline configuration as frozen data: built once by the loader, validated, passed explicitly.

Secrets never live in the file: a trunk names the environment variable holding its password and the loader
resolves it; the resolved value is kept out of `repr` so it cannot leak into logs or tracebacks.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SUPPORTED_CODECS = ("PCMU", "PCMA", "G722")
# "agent": the tenant's voice agent answers;
# "record": a trunk check — a greeting, then the caller is recorded per call.
CALL_HANDLERS = ("agent", "record")
# The agent's default process-wide cap per speech-recognition worker (one per two usable cores, see
# config/cores.py). Local speech recognition and synthesis are CPU-bound: on a 2-core box (one worker),
# 4 calls at once kept the wire turn latency near p50 0.5 s / p95 1-1.7 s, while 8 calls gave p95 ~2 s
# (`python -m bench.agent_concurrency`).
AGENT_CALLS_PER_ASR_WORKER = 4


@dataclass(frozen=True, slots=True)
class SipConfig:
    """Where the SIP stack listens and what it advertises (public_host for NAT)."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 5060
    public_host: str | None = None
    user_agent: str = "Trunkline"
    unknown_source: str = "reject"  # "reject" (403) or "drop" (silently ignore)
    retry_after_s: int = 30
    max_call_duration_s: float = 3600.0
    rtp_timeout_s: float = 30.0
    ring_timeout_s: float = 60.0
    answer_delay_s: float = 0.0  # ring this long before answering inbound calls

    @property
    def advertised_host(self) -> str:
        """The host put in Via/Contact/SDP: the public address if configured, else the listen address."""
        return self.public_host or self.listen_host


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """Our RTP legs: bind host, advertised host, and the even-port range they are taken from."""

    rtp_host: str = "127.0.0.1"
    public_host: str | None = None
    rtp_port_min: int = 20000
    rtp_port_max: int = 20999
    ptime_ms: int = 20

    @property
    def advertised_host(self) -> str:
        return self.public_host or self.rtp_host


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Postgres: the DSN comes from an environment variable; spool to disk while it is down."""

    dsn_env: str = "DATABASE_URL"
    dsn: str | None = field(default=None, repr=False)
    spool_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    json: bool = False
    log_pii: bool = False


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Process-level settings: where state and tenants live, how long a SIGTERM drain may take."""

    state_dir: Path = Path("var")
    tenants_dir: Path = Path("tenants")
    drain_timeout_s: float = 30.0
    greeting_wav: Path | None = None
    call_handler: str = "agent"
    # calls at once in this process, both directions (None: no cap); beyond it INVITEs get 503
    max_calls: int | None = None


@dataclass(frozen=True, slots=True)
class TrunkConfig:
    """One carrier trunk (or, without `host`, a direct inbound-only peer such as a local softphone)."""

    name: str
    host: str | None = None
    port: int = 5060
    domain: str | None = None
    username: str | None = None
    password_env: str | None = None
    password: str | None = field(default=None, repr=False)
    register: bool = False
    register_expires_s: int = 600
    dids: tuple[tuple[str, str], ...] = ()  # (E.164 DID, tenant id)
    allowed_sources: tuple[IpNetwork, ...] = ()
    codecs: tuple[str, ...] = SUPPORTED_CODECS
    max_calls: int = 100
    caller_id: str | None = None

    @property
    def registrar_domain(self) -> str:
        """The domain used in the AOR and R-URI of REGISTER/INVITE (defaults to the host)."""
        return self.domain or self.host or "localhost"

    def tenant_for(self, did: str) -> str | None:
        """The tenant a dialled number belongs to on this trunk, comparing digits only."""
        digits = did_digits(did)
        for number, tenant in self.dids:
            if did_digits(number) == digits:
                return tenant
        return None

    def allows(self, address: str) -> bool:
        """True when a signalling source IP is one of the carrier's allowed addresses/CIDRs."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.allowed_sources)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration; `source` is the file it came from."""

    source: Path
    sip: SipConfig
    media: MediaConfig
    store: StoreConfig
    log: LogConfig
    server: ServerConfig
    trunks: tuple[TrunkConfig, ...]

    def trunk(self, name: str) -> TrunkConfig:
        for trunk in self.trunks:
            if trunk.name == name:
                return trunk
        raise KeyError(name)


def did_digits(number: str) -> str:
    """A dialled number reduced to its digits: "+15550100", "15550100" and "tel:+1-555-0100" compare equal."""
    return "".join(ch for ch in number if ch.isdigit())
