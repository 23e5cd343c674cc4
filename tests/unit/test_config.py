"""Config loading: the example file is valid, every mistake is reported precisely, secrets stay out."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from trunkline.config.cli import run_check_config
from trunkline.config.cores import speech_workers, usable_cores
from trunkline.config.loader import ConfigError, load_config
from trunkline.config.model import AGENT_CALLS_PER_ASR_WORKER

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "trunkline.toml"

GOOD = """
[sip]
listen_port = 5070
public_host = "203.0.113.10"

[media]
rtp_port_min = 30000
rtp_port_max = 30100

[server]
state_dir = "state"
drain_timeout_s = 5

[[trunk]]
name = "carrier"
host = "127.0.0.1"
port = 5080
username = "alice"
password_env = "CARRIER_PW"
register = true
register_expires_s = 120
dids = { "+15550100" = "acme" }
allowed_sources = ["127.0.0.0/8", "198.51.100.7"]
codecs = ["pcma", "PCMU"]
max_calls = 7
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trunkline.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ or {})
    return info.value.problems


def test_example_config_is_valid() -> None:
    config = load_config(EXAMPLE, {})
    trunk = config.trunk("local")
    assert trunk.tenant_for("+15550100") == "demo"
    assert trunk.allows("127.0.0.1") and not trunk.allows("127.0.0.2")
    assert config.sip.listen_port == 5060


def test_good_config_is_frozen_data(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), {"CARRIER_PW": "s3cret"})
    trunk = config.trunk("carrier")
    assert trunk.password == "s3cret"
    assert "s3cret" not in repr(config)
    assert trunk.codecs == ("PCMA", "PCMU")
    assert trunk.allowed_sources == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("198.51.100.7/32"),
    )
    assert trunk.tenant_for("15550100") == "acme"  # carriers that drop the '+' still match
    assert config.sip.advertised_host == "203.0.113.10"
    assert config.server.state_dir == tmp_path / "state"
    with pytest.raises(AttributeError):
        config.sip.listen_port = 1  # type: ignore[misc]


def test_process_call_cap_is_set_or_sized_to_the_cores(tmp_path: Path) -> None:
    server = '[server]\ncall_handler = "{handler}"\n'
    agent = load_config(write(tmp_path, server.format(handler="agent")), {}).server.max_calls
    assert agent == AGENT_CALLS_PER_ASR_WORKER * speech_workers(usable_cores())
    assert load_config(write(tmp_path, server.format(handler="record")), {}).server.max_calls is None
    explicit = server.format(handler="record") + "max_calls = 3\n"
    assert load_config(write(tmp_path, explicit), {}).server.max_calls == 3
    found = problems(tmp_path, "[server]\nmax_calls = 0\n")
    assert found == [f"{tmp_path / 'trunkline.toml'}: server.max_calls: must be between 1 and 100000, got 0"]


def test_missing_password_variable_is_reported(tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD)
    assert found == [
        f"{tmp_path / 'trunkline.toml'}: trunk[0].password_env: "
        "environment variable CARRIER_PW is not set or empty"
    ]


def test_every_mistake_is_listed_with_file_and_key(tmp_path: Path) -> None:
    text = """
[sip]
listen_port = 70000
unknown_source = "maybe"
bogus = 1

[media]
rtp_port_min = 30000
rtp_port_max = 20000

[[trunk]]
name = "bad name!"
password = "inline"
register = true
dids = { "5550100" = "acme", "+15550101" = 3 }
allowed_sources = ["not-an-ip"]
codecs = ["G729", "PCMU", "PCMU"]
max_calls = 0
"""
    found = problems(tmp_path, text)
    file = str(tmp_path / "trunkline.toml")
    expected_keys = [
        "sip.listen_port",
        "sip.unknown_source",
        "sip.bogus",
        "media.rtp_port_max",
        "trunk[0].name",
        "trunk[0].password",
        "trunk[0].register",
        "trunk[0].dids.'5550100'",
        "trunk[0].dids.'+15550101'",
        "trunk[0].allowed_sources[0]",
        "trunk[0].codecs[0]",
        "trunk[0].codecs[2]",
        "trunk[0].max_calls",
    ]
    for key in expected_keys:
        assert any(p.startswith(f"{file}: {key}: ") for p in found), (key, found)
    assert all(p.startswith(f"{file}: ") for p in found)
    assert not any("inline" in p for p in found)  # the secret is never echoed


def test_wrong_types_name_the_expected_type(tmp_path: Path) -> None:
    found = problems(tmp_path, '[sip]\nlisten_port = "5060"\n[log]\njson = "yes"\n')
    assert any("sip.listen_port: must be an integer" in p for p in found)
    assert any("log.json: must be true/false" in p for p in found)


def test_duplicate_trunks_and_dids(tmp_path: Path) -> None:
    trunk = '[[trunk]]\nname = "a"\nallowed_sources = ["10.0.0.1"]\ndids = { "+15550100" = "t" }\n'
    found = problems(tmp_path, trunk + trunk)
    assert any("trunk[1].name: duplicate trunk name 'a'" in p for p in found)
    assert any("trunk[1].dids: +15550100 is already routed by trunk 'a'" in p for p in found)


def test_trunk_without_sources_or_ip_host_is_rejected(tmp_path: Path) -> None:
    found = problems(tmp_path, '[[trunk]]\nname = "x"\nhost = "sip.example.com"\n')
    assert any("trunk[0].allowed_sources: is required" in p for p in found)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in problems(tmp_path, "[sip\n")[0]
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml", {})
    assert info.value.problems == [f"{tmp_path / 'nope.toml'}: file not found"]


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class Args:
        path = str(EXAMPLE)

    assert run_check_config(Args()) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    cap = AGENT_CALLS_PER_ASR_WORKER * speech_workers(usable_cores())
    assert "OK" in out and f"server: agent handler, at most {cap} calls at once" in out, out
    Args.path = str(write(tmp_path, "[sip]\nlisten_port = 0\n"))
    assert run_check_config(Args()) == 1  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "sip.listen_port: must be between 1 and 65535, got 0" in err
