"""The whole server as an operator runs it: `trunkline serve --config` as a process, SIPp as the caller, and
the operator commands (`calls list/show`, `check-config`, `tenants check`) as subprocesses.

One server serves the module (embedded Postgres start-up dominates); the tests run in file order and the
SIGTERM test, which stops it, comes last among the tests that need it running. Its tenants: the committed
demo tenant, `other` (LLM mode, its key from an environment variable), `gamma` (disabled until the reload
test enables it) and `broken` (an invalid file from the start). The trunk routes one DID to each.
"""

from __future__ import annotations

import re
import secrets
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import sip_scenarios as scn
from tests.integration.server_proc import (
    DELTA_TOML,
    INTENT,
    ListedCall,
    ServerProcess,
    parse_calls_list,
    run_cli,
    running_server,
    wait_for_calls,
)
from tests.integration.sip_server import greeting_wav
from tests.peers.sipp import SippProcess, SippResult, free_udp_port
from tests.peers.speech import read_wav, rms_dbfs

pytestmark = pytest.mark.integration

DEMO, OTHER, GAMMA, DELTA, BROKEN = "+15550100", "+15550200", "+15550300", "+15550400", "+15550500"
CALLER = "+15551234567"  # the From user of tests.integration.sip_scenarios
RETRY_AFTER_S = 17
PACKETS_PER_S = 50  # 20 ms PCMU
LONG_CALL_S = 6  # the call kept up across the reload

OTHER_TOML = """display_name = "Other Co"
numbers = ["+15550200"]
greeting = "Hello from Other Co."
prompt = "You answer the phone for Other Co."

[policy]
mode = "llm"

[llm]
base_url = "http://127.0.0.1:9/v1"
model = "local"
api_key_env = "E2E_OTHER_LLM_KEY"
"""
GAMMA_TOML = (
    'enabled = false\ndisplay_name = "Gamma"\nnumbers = ["+15550300"]\ngreeting = "Hello from Gamma."\n'
    + INTENT
)
BROKEN_TOML = (
    'display_name = "Broken"\nnumbers = ["+15550500"]\ngreeting = "Hi."\n'
    + INTENT
    + '\n[limits]\nmax_call_minutes = "ten"\n'
)


@pytest.fixture(scope="module")
def secret_env() -> dict[str, str]:
    """Recognisable, per-run secret values for the trunk password and `other`'s LLM key."""
    return {
        "E2E_TRUNK_PASSWORD": f"trunkpw-{secrets.token_hex(8)}",
        "E2E_OTHER_LLM_KEY": f"sk-e2e-{secrets.token_hex(12)}",
    }


@pytest.fixture(scope="module")
def server(secret_env: dict[str, str]) -> Iterator[ServerProcess]:
    trunks = [
        {
            "name": "local",
            "allowed_sources": ["127.0.0.1/32"],
            "dids": {DEMO: "demo", OTHER: "other", GAMMA: "gamma", DELTA: "delta", BROKEN: "broken"},
            "codecs": ["PCMU", "PCMA"],
            "max_calls": 20,
        },
        {  # outbound-only carrier: only here so that a trunk password is loaded; nothing dials it
            "name": "carrier",
            "host": "127.0.0.1",
            "port": free_udp_port(),
            "username": "e2e-user",
            "password_env": "E2E_TRUNK_PASSWORD",
        },
    ]
    with running_server(
        trunks=trunks,
        greeting_wav=greeting_wav(),
        tenants={"other": OTHER_TOML, "gamma": GAMMA_TOML, "delta": DELTA_TOML, "broken": BROKEN_TOML},
        env=secret_env,
        sip={"retry_after_s": RETRY_AFTER_S},
    ) as srv:
        yield srv


def place_call(srv: ServerProcess, workdir: Path, did: str, scenario: str) -> SippProcess:
    """Start a SIPp caller dialling `did` on the server (echoing our RTP back); returns once it runs."""
    return SippProcess(
        scenario, workdir, remote=("127.0.0.1", srv.sip_port), service=did, rtp_echo=True, timeout_s=30
    ).start()


def answered(hold_ms: int) -> str:
    """INVITE, 180, 200, ACK, `hold_ms` of call, then the caller's BYE."""
    return scn.answered_call(hold_ms=hold_ms)


def ok(result: SippResult) -> SippResult:
    assert result.ok, result.describe()
    return result


def new_calls(srv: ServerProcess, tenant: str, before: set[str], count: int = 1) -> list[ListedCall]:
    """The `count` calls of `tenant` not in `before`, once each has an end reason."""
    rows = wait_for_calls(
        srv,
        tenant,
        lambda rows: len([r for r in rows if r.call_id not in before and r.end_reason != "-"]) >= count,
    )
    fresh = [r for r in rows if r.call_id not in before]
    assert len(fresh) == count, rows
    return fresh


def listed_ids(srv: ServerProcess, tenant: str) -> set[str]:
    result = srv.calls_list(tenant)
    assert result.returncode == 0, result.stderr
    return {r.call_id for r in parse_calls_list(result.stdout)}


def media_packets(show_output: str) -> tuple[int, int]:
    """(rx, tx) RTP packet counts from `calls show`."""
    match = re.search(r"media\s+rx (\d+) / tx (\d+) packets", show_output)
    assert match, show_output
    return int(match[1]), int(match[2])


@pytest.fixture(scope="module")
def demo_call(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> tuple[ListedCall, Path]:
    """One 1.5 s call to the demo DID: its `calls list` row and the server's recording of what it heard."""
    recordings = server.state_dir / "recordings"
    before_wavs = set(recordings.glob("*.wav"))
    before = listed_ids(server, "demo")
    ok(place_call(server, tmp_path_factory.mktemp("demo_call"), DEMO, answered(1500)).wait())
    (row,) = new_calls(server, "demo", before)  # the record ends after the handler wrote its WAV
    (wav,) = set(recordings.glob("*.wav")) - before_wavs
    return row, wav


# --- a call through `trunkline serve`, recorded and shown by the CLI ---------------------------------


def test_call_is_answered_with_audio_both_ways_and_recorded(
    server: ServerProcess, demo_call: tuple[ListedCall, Path]
) -> None:
    row, wav = demo_call
    assert (row.direction, row.from_number, row.to_number, row.end_reason) == (
        "inbound",
        CALLER,
        DEMO,
        "remote_hangup",
    )
    shown = server.calls_show("demo", row.call_id)
    assert shown.returncode == 0, shown.stderr
    assert f"call {row.call_id}  tenant demo" in shown.stdout
    assert re.search(rf"direction\s+inbound\s+from {re.escape(CALLER)}\s+to {re.escape(DEMO)}", shown.stdout)
    assert re.search(r"end reason\s+remote_hangup\s+codec PCMU", shown.stdout), shown.stdout
    rx, tx = media_packets(shown.stdout)
    assert tx >= PACKETS_PER_S * 1.5 * 0.7, shown.stdout  # our greeting went out for the whole call
    assert rx >= PACKETS_PER_S * 1.5 * 0.5, shown.stdout  # ...reached the caller: SIPp echoed it back
    pcm, rate = read_wav(wav)
    assert len(pcm) >= rate  # at least 1 s of the caller's audio was decoded by the server
    assert rms_dbfs(pcm) > -40, "what the server heard from the caller is silence"


# --- tenant isolation at the CLI ------------------------------------------------------------------


def test_calls_of_one_tenant_are_invisible_to_another(
    server: ServerProcess, demo_call: tuple[ListedCall, Path]
) -> None:
    row, _ = demo_call
    listed = server.calls_list("other")
    assert listed.returncode == 0, listed.stderr
    assert row.call_id not in listed.stdout
    assert all(r.to_number != DEMO for r in parse_calls_list(listed.stdout))
    shown = server.calls_show("other", row.call_id)
    assert shown.returncode == 1
    assert f"no call {row.call_id} for tenant other" in shown.stderr
    assert row.call_id in server.calls_list("demo").stdout


# --- a broken tenant file at start-up -------------------------------------------------------------


def test_broken_tenant_at_startup_is_reported_and_not_served(
    server: ServerProcess, demo_call: tuple[ListedCall, Path], tmp_path: Path
) -> None:
    problem = f"{server.tenants_dir / 'broken' / 'tenant.toml'}: limits.max_call_minutes: must be an integer"
    server.wait_for(re.escape(problem), timeout_s=1)
    server.wait_for(r"tenants\.loaded .*serving=\['delta', 'demo', 'other'\]", timeout_s=1)
    # the good tenants serve (demo_call was answered and recorded); the broken one is refused unanswered
    mark = server.mark()
    ok(place_call(server, tmp_path, BROKEN, scn.rejected_call(480)).wait())
    server.wait_for(r"call\.tenant_not_serving .*tenant=broken", after=mark)
    assert parse_calls_list(server.calls_list("broken").stdout) == []
    checked = server.cli("tenants", "check", "--dir", str(server.tenants_dir))
    assert checked.returncode == 1
    assert problem in checked.stdout


def test_a_tenant_at_its_concurrent_call_limit_gets_busy_and_others_do_not(
    server: ServerProcess, tmp_path: Path
) -> None:
    mark = server.mark()
    first = place_call(server, tmp_path / "delta1", DELTA, answered(6000))
    server.wait_for(r"sip\.call_admitted .*tenant=delta", after=mark)
    server.wait_for(r"sip\.call_answered", after=mark)  # the only call in flight
    ok(place_call(server, tmp_path / "delta2", DELTA, scn.rejected_call(486)).wait())
    server.wait_for(r"call\.tenant_at_capacity .*tenant=delta", after=mark)
    ok(place_call(server, tmp_path / "demo2", DEMO, answered(500)).wait())  # other tenants are not held up
    ok(first.wait())
    ok(place_call(server, tmp_path / "delta3", DELTA, answered(500)).wait())  # its slot is free again


# --- SIGHUP reload with a call in progress ----------------------------------------------------------


def test_sighup_reload_keeps_calls_up_and_applies_tenant_changes(
    server: ServerProcess, tmp_path: Path
) -> None:
    before = {t: listed_ids(server, t) for t in ("demo", "other")}
    mark = server.mark()
    long_call = place_call(server, tmp_path / "long", DEMO, answered(LONG_CALL_S * 1000))
    # gamma is disabled: its number is refused with 480 before answering, and nothing is recorded
    ok(place_call(server, tmp_path / "gamma0", GAMMA, scn.rejected_call(480)).wait())
    server.wait_for(r"call\.tenant_not_serving .*tenant=gamma", after=mark)
    server.wait_for(r"sip\.call_admitted .*tenant=demo", after=mark)

    edited = server.mark()
    gamma_file = server.tenants_dir / "gamma" / "tenant.toml"
    gamma_file.write_text(gamma_file.read_text().replace("enabled = false", "enabled = true"))
    other_file = server.tenants_dir / "other" / "tenant.toml"
    other_file.write_text(OTHER_TOML + "\n[limits\n")  # a TOML syntax error
    sighup = server.signal(signal.SIGHUP)
    # a forced reload re-reads unchanged tenants too: only SIGHUP (not the file watcher) loads demo again
    server.wait_for(r"tenants\.reload_requested", after=sighup)
    server.wait_for(r"tenants\.reloaded .*loaded=\[[^\]]*'demo'", after=sighup)
    assert long_call.running, "the call in progress ended during the reload"
    server.wait_for(re.escape(f"{other_file}: (toml): not valid TOML"), after=edited)
    server.wait_for(r"tenants\.load_failed .*kept_previous=True .*tenant_id=other", after=edited)

    # gamma now serves; other keeps serving its last good version
    gamma_call = place_call(server, tmp_path / "gamma1", GAMMA, answered(1000))
    other_call = place_call(server, tmp_path / "other1", OTHER, answered(1000))
    ok(gamma_call.wait())
    ok(other_call.wait())
    ok(long_call.wait())

    (gamma_row,) = new_calls(server, "gamma", set())
    assert (gamma_row.to_number, gamma_row.end_reason) == (GAMMA, "remote_hangup")
    (other_row,) = new_calls(server, "other", before["other"])
    assert (other_row.to_number, other_row.end_reason) == (OTHER, "remote_hangup")
    (long_row,) = new_calls(server, "demo", before["demo"])
    assert long_row.end_reason == "remote_hangup"
    rx, tx = media_packets(server.calls_show("demo", long_row.call_id).stdout)
    # audio flowed both ways for (nearly) the whole call, i.e. on after the reload too
    assert tx >= PACKETS_PER_S * LONG_CALL_S * 0.7 and rx >= PACKETS_PER_S * LONG_CALL_S * 0.5, (rx, tx)


# --- a second server on the same SIP port ------------------------------------------------------------


def test_a_taken_sip_port_is_a_clear_startup_error(server: ServerProcess, tmp_path: Path) -> None:
    # Another SIP server (sippy-based, like us) holds the port with SO_REUSEADDR. Our state dir is shared
    # with the module's server (joining its embedded Postgres is quick), the SIP port is not.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other_sip_server:
        other_sip_server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other_sip_server.bind(("127.0.0.1", 0))
        port = other_sip_server.getsockname()[1]
        second = ServerProcess.create(
            tmp_path,
            trunks=[{"name": "local", "allowed_sources": ["127.0.0.1/32"], "dids": {DEMO: "demo"}}],
            greeting_wav=greeting_wav(),
            sip={"listen_port": port},
            server={"state_dir": str(server.state_dir)},
        )
        try:
            with pytest.raises(RuntimeError, match="did not become ready"):
                second.start(timeout_s=30)
        finally:
            if second.running:
                second.stop()
    assert second.returncode == 1
    expected = f"{second.config_path}: sip.listen_port: cannot listen on 127.0.0.1:{port}: "
    assert expected in second.text(stream="stderr"), second.text()
    assert "Traceback" not in second.text()
    assert server.running and server.calls_list("demo").returncode == 0  # the module's server is unharmed


# --- SIGTERM with a call up (stops the module's server) ---------------------------------------------


def test_sigterm_refuses_new_calls_lets_the_call_finish_and_exits_0(
    server: ServerProcess, tmp_path: Path
) -> None:
    before = listed_ids(server, "demo")
    mark = server.mark()
    long_call = place_call(server, tmp_path / "long", DEMO, answered(3000))
    server.wait_for(r"sip\.call_admitted .*tenant=demo", after=mark)
    server.signal(signal.SIGTERM)
    server.wait_for(r"sip\.draining", after=mark)
    refused = place_call(
        server,
        tmp_path / "refused",
        DEMO,
        scn.rejected_call(503, check=("Retry-After:", f"^ *{RETRY_AFTER_S}")),
    )
    ok(refused.wait())
    assert long_call.running, "the call in progress was cut by the drain"
    ok(long_call.wait())
    assert server.stop(timeout_s=60) == 0, server.text()[-4000:]
    assert "TRUNKLINE-STOPPED" in server.text(stream="stdout")
    # the call that ended during the drain was recorded; the CLI starts the embedded database by itself now
    (row,) = new_calls(server, "demo", before)
    assert (row.to_number, row.end_reason) == (DEMO, "remote_hangup")


# --- the server's whole output, once it has stopped -----------------------------------------------------


def test_server_output_has_no_store_or_handler_errors(server: ServerProcess) -> None:
    assert server.stop() == 0
    text = server.text()
    for bad in ("store.database_unavailable", "call.handler_failed", "sip.on_call_failed", "Traceback"):
        assert bad not in text, f"{bad} in server output:\n{text[-4000:]}"


def test_stdout_carries_only_command_output(server: ServerProcess) -> None:
    assert server.stop() == 0
    assert set(server.text(stream="stdout").splitlines()) == {"TRUNKLINE-READY", "TRUNKLINE-STOPPED"}
    listed = server.calls_list("demo")
    assert listed.stdout.startswith("CALL ID "), listed.stdout


# --- secrets never in output -----------------------------------------------------------------------


def test_secrets_never_appear_in_output(
    server: ServerProcess, secret_env: dict[str, str], tmp_path: Path
) -> None:
    assert server.stop() == 0
    server.wait_for(r"tenants\.loaded .*'other'", timeout_s=1)  # the key was resolved: other served
    checked = server.cli("check-config", str(server.config_path))
    assert checked.returncode == 0, checked.stderr
    assert "trunk carrier: 127.0.0.1" in checked.stdout
    pristine = tmp_path / "tenants"
    (pristine / "other").mkdir(parents=True)
    (pristine / "other" / "tenant.toml").write_text(OTHER_TOML)
    tenants = server.cli("--log-level", "debug", "tenants", "check", "--dir", str(pristine))
    assert tenants.returncode == 0 and "1 tenant(s) ok: other" in tenants.stdout, tenants.stdout
    # the server's whole output, and that of every operator command the module ran (calls list/show, ...)
    outputs = [("serve", server.text()), *((" ".join(args), text) for args, text in server.cli_outputs)]
    for name, value in secret_env.items():
        for where, text in outputs:
            assert value not in text, f"{name}'s value printed by {where}"


def test_a_secret_pasted_into_an_env_field_is_not_echoed(tmp_path: Path) -> None:
    pasted = f"sk-live-{secrets.token_hex(12)}"
    config = tmp_path / "trunkline.toml"
    config.write_text(
        f'[[trunk]]\nname = "carrier"\nhost = "127.0.0.1"\nusername = "u"\npassword_env = "{pasted}"\n'
    )
    (tmp_path / "tenants" / "other").mkdir(parents=True)
    (tmp_path / "tenants" / "other" / "tenant.toml").write_text(
        OTHER_TOML.replace('"E2E_OTHER_LLM_KEY"', f'"{pasted}"')
    )
    checked = run_cli("check-config", str(config))
    tenants = run_cli("tenants", "check", "--dir", str(tmp_path / "tenants"))
    assert checked.returncode == 1 and tenants.returncode == 1  # both files are rejected...
    assert "password_env" in checked.stderr and "api_key_env" in tenants.stdout
    for text in (checked.stdout, checked.stderr, tenants.stdout, tenants.stderr):
        assert pasted not in text  # ...without printing the value


# --- config and tenant checks ----------------------------------------------------------------------


def test_committed_config_and_tenants_pass_their_checks() -> None:
    config = run_cli("check-config", "config/trunkline.toml")
    assert config.returncode == 0, config.stderr
    assert "config/trunkline.toml: OK" in config.stdout
    tenants = run_cli("tenants", "check", "--dir", "tenants")
    assert tenants.returncode == 0, tenants.stdout + tenants.stderr
    assert "tenant(s) ok: demo" in tenants.stdout


def test_broken_config_is_refused_with_file_key_why_lines(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(
        '[sip]\nlisten_port = 70000\nunknown_source = "maybe"\ncolour = "blue"\n'
        '[[trunk]]\nallowed_sources = ["not-an-ip"]\n'
    )
    expected = {
        "sip.listen_port": "between 1 and 65535",
        "sip.unknown_source": "must be one of",
        "sip.colour": "unknown key",
        "trunk[0].name": "required",
        "trunk[0].allowed_sources[0]": "not an IP address",
    }
    for args in (("check-config", str(path)), ("serve", "--config", str(path))):
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode != 0, result.stdout
        assert "TRUNKLINE-READY" not in result.stdout
        lines = [line.split(": ", 2) for line in result.stderr.splitlines() if line.startswith(f"{path}: ")]
        problems = {parts[1]: parts[2] for parts in lines if len(parts) == 3}
        for key, why in expected.items():
            assert why in problems.get(key, ""), (
                f"{args[0]}: no '{path}: {key}: ...{why}...' in\n{result.stderr}"
            )
