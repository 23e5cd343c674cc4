"""Keeping a trunk registration alive: a pure policy and a thin sippy adapter that runs on the SIP thread.

We do not use sippy's `SipRegistrationAgent`: it omits Expires on the wire, refreshes at 100% of the grant,
retries after a fixed 60 s and answers a 407 with the wrong header. `RegistrationPolicy` decides when to
send (refresh at 80%, exponential backoff with jitter, stop on 403); `RegistrationAgent` builds and sends
the REGISTER with digest auth for 401 and 407.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trunkline.config.model import TrunkConfig
from trunkline.sip.calls import RegistrationChanged

REFRESH_RATIO = 0.8
MIN_REFRESH_S = 1.0


@dataclass(slots=True)
class RegistrationPolicy:
    """When to (re)register; time is passed in, `next_at` is the next deadline (None: nothing to do)."""

    expires_s: int
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0
    rng: random.Random = field(default_factory=random.Random)
    state: str = "idle"
    failures: int = 0
    next_at: float | None = None
    granted_s: int | None = None

    def start(self, now: float) -> None:
        self.state = "registering"
        self.next_at = now

    def sent(self) -> None:
        self.next_at = None

    def succeeded(self, now: float, granted_s: int) -> None:
        """A 2xx: refresh well before the granted expiry."""
        self.state, self.failures, self.granted_s = "registered", 0, granted_s
        self.next_at = now + max(MIN_REFRESH_S, granted_s * REFRESH_RATIO)

    def failed(self, now: float, status: int) -> None:
        """A final failure: stop for good on 403, otherwise back off exponentially with jitter."""
        if status == 403:
            self.state, self.next_at = "forbidden", None
            return
        self.state = "failed"
        self.failures += 1
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (self.failures - 1))
        self.next_at = now + delay * (0.5 + 0.5 * self.rng.random())

    def stop(self) -> None:
        self.state, self.next_at = "unregistered", None

    def next_deadline(self) -> float | None:
        return self.next_at


class RegistrationAgent:
    """Sends REGISTER for one trunk on the SIP thread and reports state changes; not thread-safe by design."""

    MAX_AUTH_TRIES = 2

    def __init__(
        self,
        sip: Any,  # trunkline.sip.stack.SipStack (kept untyped: sippy objects inside)
        trunk: TrunkConfig,
        contact_user: str,
        report: Callable[[RegistrationChanged], None],
        rng: random.Random | None = None,
    ) -> None:
        self._sip = sip
        self._trunk = trunk
        self._contact_user = contact_user
        self._report = report
        self.policy = RegistrationPolicy(trunk.register_expires_s, rng=rng or random.Random())
        self._timer: Any = None
        self._auth_tries = 0
        self._challenge: tuple[str, Any, Any] | None = None
        self._call_id: Any = None
        self._cseq = 1
        self._unregister_done: Callable[[], None] | None = None
        self._stopped = False

    def start(self) -> None:
        self.policy.start(self._sip.now())
        self._report(RegistrationChanged(self._trunk.name, "registering"))
        self._send(self._trunk.register_expires_s)

    def unregister(self, done: Callable[[], None]) -> None:
        """Remove the binding (Expires: 0); `done` runs once it is answered or timed out."""
        self._stopped = True
        self._cancel_timer()
        self.policy.stop()
        self._unregister_done = done
        self._auth_tries = 0
        self._send(0)

    def _send(self, expires: int) -> None:
        self.policy.sent()
        req = self._sip.build_register(self._trunk, self._contact_user, expires, self._call_id, self._cseq)
        self._call_id = req.getHFBody("call-id")
        self._cseq += 1
        if self._challenge is not None:
            self._add_auth(req, *self._challenge)
        self._sip.send_request(req, lambda resp: self._on_response(resp, expires))

    def _add_auth(self, req: Any, header: str, challenge: Any, qop: Any) -> None:
        assert self._trunk.username is not None and self._trunk.password is not None
        auth = challenge.genAuthHF(
            self._trunk.username, self._trunk.password, "REGISTER", str(req.getRURI()), qop=qop
        )
        self._sip.add_header(req, header, auth)

    def _on_response(self, resp: Any, expires: int) -> None:
        code = resp.getSCode()[0]
        if code < 200:
            return
        now = self._sip.now()
        if code in (401, 407) and self._auth_tries < self.MAX_AUTH_TRIES and self._take_challenge(resp, code):
            self._auth_tries += 1
            self._send(expires)
            return
        self._auth_tries = 0
        if expires == 0:
            self._finish_unregister(code)
            return
        if self._stopped:
            return
        if 200 <= code < 300:
            granted = self._granted(resp, expires)
            self.policy.succeeded(now, granted)
            self._report(RegistrationChanged(self._trunk.name, "registered", f"{code}", granted))
        else:
            self.policy.failed(now, code)
            self._challenge = None
            self._report(
                RegistrationChanged(self._trunk.name, self.policy.state, f"{code} {resp.getSCode()[1]}")
            )
        self._schedule()

    def _take_challenge(self, resp: Any, code: int) -> bool:
        names = (
            ("www-authenticate", "authorization")
            if code == 401
            else ("proxy-authenticate", "proxy-authorization")
        )
        if self._trunk.username is None or self._trunk.password is None or resp.countHFs(names[0]) == 0:
            return False
        challenge = resp.getHFBody(names[0])
        supported, qop = challenge.supportedAlgorithm()
        if not supported:
            return False
        self._challenge = (names[1], challenge, qop)
        return True

    def _granted(self, resp: Any, asked: int) -> int:
        """The expiry the registrar granted: our Contact's expires param, else Expires, else what we asked."""
        for contact in resp.getHFBodys("contact"):
            url = contact.getUrl()
            if url.username == self._contact_user and "expires" in contact.address.params:
                try:
                    return int(contact.address.params["expires"])
                except ValueError:
                    break
        if resp.countHFs("expires") > 0:
            return int(resp.getHFBody("expires").getNum())
        return asked

    def _schedule(self) -> None:
        self._cancel_timer()
        deadline = self.policy.next_deadline()
        if deadline is None:
            return
        delay = max(0.0, deadline - self._sip.now())
        self._timer = self._sip.timer(delay, self._refresh)

    def _refresh(self) -> None:
        self._timer = None
        if self._stopped:
            return
        self._auth_tries = 0
        self._send(self._trunk.register_expires_s)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _finish_unregister(self, code: int) -> None:
        self._report(RegistrationChanged(self._trunk.name, "unregistered", f"{code}"))
        done, self._unregister_done = self._unregister_done, None
        if done is not None:
            done()
