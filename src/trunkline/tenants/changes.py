"""Pure helpers for the tenant registry: DID normalisation, change detection, DID-conflict resolution.

No I/O here: fingerprints come in as data, decisions go out as data, so reload rules are unit-testable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from trunkline.tenants.model import TenantConfig
from trunkline.tenants.reader import TenantConfigError

_VISUAL_SEPARATORS = re.compile(r"[\s\-.()/]")


@dataclass(frozen=True, slots=True)
class FileStamp:
    """One file of a tenant directory as seen by stat: enough to notice an edit."""

    name: str
    mtime_ns: int
    size: int


Fingerprint = tuple[FileStamp, ...]


@dataclass(frozen=True, slots=True)
class ChangeSet:
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def detect_changes(previous: Mapping[str, Fingerprint], current: Mapping[str, Fingerprint]) -> ChangeSet:
    """Which tenant directories appeared, changed (any file stamp differs) or disappeared."""
    return ChangeSet(
        added=tuple(sorted(current.keys() - previous.keys())),
        changed=tuple(sorted(k for k in current.keys() & previous.keys() if current[k] != previous[k])),
        removed=tuple(sorted(previous.keys() - current.keys())),
    )


def normalize_did(raw: str) -> str | None:
    """A dialled number in E.164 form ('+15550100'), from what a trunk puts in To/R-URI, or None.

    Accepts 'sip:+1-555-0100@host;user=phone', 'tel:+15550100', '0015550100' and bare '15550100'
    (trunks often drop the '+'). Anything that is not 3-15 digits after that is not a DID.
    """
    value = raw.strip()
    lower = value.lower()
    for scheme in ("sips:", "sip:", "tel:"):
        if lower.startswith(scheme):
            value = value[len(scheme) :]
            break
    value = value.split("@", 1)[0].split(";", 1)[0]
    value = _VISUAL_SEPARATORS.sub("", value)
    if value.startswith("+"):
        digits = value[1:]
    elif value.startswith("00"):
        digits = value[2:]
    else:
        digits = value
    if not digits.isascii() or not digits.isdigit() or not 3 <= len(digits) <= 15 or digits[0] == "0":
        return None
    return "+" + digits


@dataclass(frozen=True, slots=True)
class Resolution:
    """Accepted configs after DID conflicts, and the errors for every rejected new version."""

    accepted: dict[str, TenantConfig]
    rejected: dict[str, list[TenantConfigError]]


def resolve_did_conflicts(
    candidates: Mapping[str, TenantConfig],
    fresh: set[str],
    previous: Mapping[str, TenantConfig],
    previous_owner: Mapping[str, str],
) -> Resolution:
    """Keep every DID with exactly one enabled tenant.

    A DID already served by a tenant stays with it; any *new* version (in `fresh`) that also claims it
    is rejected and that tenant falls back to its previous version (or to nothing). When no current
    owner is among the claimants, all of them are rejected: no silent first-come winner.
    """
    accepted = dict(candidates)
    fresh = set(fresh)
    rejected: dict[str, list[TenantConfigError]] = {}
    while True:
        claims: dict[str, list[str]] = {}
        for tid in sorted(accepted):
            config = accepted[tid]
            if config.enabled:
                for number in config.numbers:
                    claims.setdefault(number, []).append(tid)
        conflicts = {did: ids for did, ids in claims.items() if len(ids) > 1}
        if not conflicts:
            return Resolution(accepted, rejected)
        for did, ids in sorted(conflicts.items()):
            owner = previous_owner.get(did)
            losers = [tid for tid in ids if tid != owner] if owner in ids else ids
            files = {tid: accepted[tid].source_file for tid in ids if tid in accepted}
            for loser in losers:
                if loser not in accepted:
                    continue
                config = accepted[loser]
                others = [f"'{o}' ({file})" for o, file in files.items() if o != loser]
                index = config.numbers.index(did)
                why = f"{did} is already claimed by tenant {', '.join(others)}"
                rejected.setdefault(loser, []).append(
                    TenantConfigError(config.source_file, f"numbers[{index}]", why)
                )
                if loser in fresh and loser in previous:
                    accepted[loser] = previous[loser]
                else:
                    del accepted[loser]
                fresh.discard(loser)
