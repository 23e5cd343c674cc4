"""Kamailio started by a test as the carrier trunk (Twilio/Telnyx-like), on 127.0.0.1 only.

Customer side (`customer_port`): REGISTER challenged with 401 (digest MD5, qop=auth, passwords in an htable),
403 on a wrong password; INVITEs from the customer challenged with 407 and relayed to `gateway_port` (the
"PSTN" answerer a test starts). PSTN side (`pstn_port`, trusted): an INVITE for a DID goes to the contact
registered by the DID's owner (R-URI = contact, To keeps the DID); 404 for an unknown DID, 480 when the owner
is not registered. Record-Route is on for every dialog. Marker lines in the log let tests observe REGISTERs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
# A carrier that takes REFER only from an authenticated customer (digest, like its INVITEs) and refuses to
# transfer to sip:refused@... (a destination it will not call); other REFERs go on to the caller.
REFER_RULES = """\
    if (is_method("REFER")) {
        if (!is_present_hf("Proxy-Authorization")) { proxy_challenge("$fd", "1"); exit; }
        if ($sht(pw=>$au) == $null) { sl_send_reply("403", "Forbidden"); exit; }
        pv_proxy_authenticate("$fd", "$sht(pw=>$au)", "0");
        if ($rc < 0) { sl_send_reply("403", "Forbidden"); exit; }
        consume_credentials();
        xlog("L_ALERT", "TL-REFER-AUTHENTICATED user=$au\\n");
        if ($(hdr(Refer-To){s.tolower}) =~ "sip:refused@") {
            xlog("L_ALERT", "TL-REFER-REFUSED\\n"); sl_send_reply("403", "Forbidden"); exit;
        }
    }
"""
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"


def free_udp_port() -> int:
    """An unused UDP port on 127.0.0.1 (even, so it also suits RTP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port % 2 == 0 and port < 65000:
            return port
    raise RuntimeError("no free even UDP port")


@dataclass
class KamailioTrunk:
    """Configuration and process of one kamailio instance."""

    workdir: Path
    users: dict[str, str]  # username -> password
    dids: dict[str, str]  # DID (E.164) -> username
    customer_port: int = field(default_factory=free_udp_port)
    pstn_port: int = field(default_factory=free_udp_port)
    gateway_port: int = field(default_factory=free_udp_port)
    max_expires_s: int = 3600
    domain: str = "127.0.0.1"
    check_refer: bool = False  # REFER needs digest auth; REFER to sip:refused@... gets 403 (REFER_RULES)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "kamailio.log"

    def config_text(self) -> str:
        init = "".join(f'    $var(k) = "{u}"; $sht(pw=>$var(k)) = "{p}";\n' for u, p in self.users.items())
        init += "".join(f'    $var(k) = "{d}"; $sht(did=>$var(k)) = "{u}";\n' for d, u in self.dids.items())
        return KAMAILIO_CFG.format(
            modules=MODULES,
            customer=self.customer_port,
            pstn=self.pstn_port,
            gateway=self.gateway_port,
            max_expires=self.max_expires_s,
            domain=self.domain,
            secret=uuid.uuid4().hex,
            init=init,
            refer=REFER_RULES if self.check_refer else "",
        )

    def start(self, timeout_s: float = 10.0) -> None:
        cfg = self.workdir / "kamailio.cfg"
        cfg.write_text(self.config_text())
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                KAMAILIO,
                "-DD",
                "-E",
                "-f",
                str(cfg),
                "-P",
                str(self.workdir / "kamailio.pid"),
                "-m",
                "64",
                "-M",
                "8",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,  # its own process group: stop() ends every worker with it
        )
        log.close()
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        """Poll with OPTIONS on the customer port until kamailio answers."""
        deadline = time.monotonic() + timeout_s
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.05)
            port = sock.getsockname()[1]
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(
                        f"kamailio exited: {self.log_path.read_text(errors='replace')[-2000:]}"
                    )
                sock.sendto(_options(port, self.customer_port), ("127.0.0.1", self.customer_port))
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    continue
                if data.startswith(b"SIP/2.0"):
                    return
        raise RuntimeError("kamailio did not become ready")

    def stop(self) -> None:
        """SIGTERM kamailio's whole process group (SIGKILL after 5 s): signalling only the main process left
        some of its worker processes running after every test."""
        if self.process is None:
            return
        group = self.process.pid  # a session leader: its pid is the group id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # any worker still there
        self.process = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def registrations(self) -> list[tuple[str, int]]:
        """(user, Expires header) of every successful REGISTER, in order, from the marker lines."""
        return [
            (m[0], int(m[1])) for m in re.findall(r"TL-REGISTERED user=(\S+) expires=(\d+)", self.log_text())
        ]

    def wait_for(self, predicate: object, timeout_s: float) -> bool:
        """Wait until `predicate(self)` is true (checking the log as it grows)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):  # type: ignore[operator]
                return True
            time.sleep(0.05)
        return bool(predicate(self))  # type: ignore[operator]


def _options(local_port: int, port: int) -> bytes:
    branch = uuid.uuid4().hex
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{branch}\r\n"
        f"From: <sip:probe@127.0.0.1>;tag={branch[:8]}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
        f"Call-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


KAMAILIO_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
memdbg=5
memlog=5
children=2
auto_aliases=no
listen=udp:127.0.0.1:{customer}
listen=udp:127.0.0.1:{pstn}
mpath="{modules}"

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "htable.so"

modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", {max_expires})
modparam("registrar", "min_expires", 1)
modparam("registrar", "default_expires", 600)
modparam("auth", "secret", "{secret}")
modparam("htable", "htable", "pw=>size=4;")
modparam("htable", "htable", "did=>size=4;")
modparam("rr", "enable_full_lr", 1)
modparam("rr", "append_fromtag", 1)

event_route[htable:mod-init] {{
{init}}}

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (has_totag()) {{ route(WITHINDLG); exit; }}
    t_check_trans();
    if ($Rp == {pstn}) {{ route(FROM_PSTN); exit; }}
    if (is_method("REGISTER")) {{ route(REGISTRAR); exit; }}
    if (is_method("OPTIONS")) {{ sl_send_reply("200", "OK"); exit; }}
    if (is_method("INVITE")) {{ route(FROM_CUSTOMER); exit; }}
    sl_send_reply("405", "Method Not Allowed");
}}

route[WITHINDLG] {{
{refer}    if (loose_route()) {{ t_relay(); exit; }}
    if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    sl_send_reply("404", "Not here");
}}

route[REGISTRAR] {{
    if (!is_present_hf("Authorization")) {{ www_challenge("$td", "1"); exit; }}
    if ($sht(pw=>$au) == $null) {{ sl_send_reply("403", "Forbidden"); exit; }}
    pv_www_authenticate("$td", "$sht(pw=>$au)", "0");
    $var(rc) = $rc;
    if ($var(rc) == -2) {{
        xlog("L_ALERT", "TL-AUTH-FAILED user=$au\\n");
        sl_send_reply("403", "Forbidden");
        exit;
    }}
    if ($var(rc) < 0) {{ www_challenge("$td", "1"); exit; }}
    consume_credentials();
    if (!save("location")) {{ sl_reply_error(); exit; }}
    xlog("L_ALERT", "TL-REGISTERED user=$au expires=$hdr(Expires)\\n");
}}

route[FROM_CUSTOMER] {{
    if (!is_present_hf("Proxy-Authorization")) {{ proxy_challenge("$fd", "1"); exit; }}
    if ($sht(pw=>$au) == $null) {{ sl_send_reply("403", "Forbidden"); exit; }}
    pv_proxy_authenticate("$fd", "$sht(pw=>$au)", "0");
    $var(rc) = $rc;
    if ($var(rc) == -2) {{ sl_send_reply("403", "Forbidden"); exit; }}
    if ($var(rc) < 0) {{ proxy_challenge("$fd", "1"); exit; }}
    consume_credentials();
    record_route();
    $du = "sip:127.0.0.1:{gateway}";
    xlog("L_ALERT", "TL-OUTBOUND to=$rU\\n");
    t_relay();
}}

route[FROM_PSTN] {{
    if (!is_method("INVITE")) {{ sl_send_reply("405", "Method Not Allowed"); exit; }}
    $var(owner) = $sht(did=>$tU);
    if ($sht(did=>$tU) == $null) {{ sl_send_reply("404", "Not Found"); exit; }}
    $ru = "sip:" + $var(owner) + "@{domain}";
    if (!lookup("location")) {{ sl_send_reply("480", "Temporarily Unavailable"); exit; }}
    record_route();
    t_relay();
}}
"""
