"""The few things signalling asks of a media leg, in one place: open it (for an answer or an offer), point it
at the remote address, hold/unhold, forward its RFC 4733 digits, last-RTP time for the watchdog, close.

Answers to a caller's offer choose by the trunk's preference. Our own offers (outbound calls, late-offer
INVITEs) list every codec the trunk allows: the leg opens with the first and `set_codec` switches it to
the codec the answer chose, before any media flows.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from trunkline.config.model import Config
from trunkline.sip.sdp import CODEC_PAYLOAD, DEFAULT_DTMF_PT, Negotiated


class LegAdapter:
    """Binds SipService to `trunkline.mediaserver.engine.MediaEngine` legs."""

    def __init__(self, engine: Any, config: Config) -> None:
        self._engine = engine
        self._config = config

    def open_for_answer(self, media: Negotiated) -> Any:
        """A leg for a caller's offer we negotiated. Raises PortsExhausted when the RTP range is full."""
        remote = None if media.remote_host == "0.0.0.0" else (media.remote_host, media.remote_port)
        leg = self._engine.open_leg(
            media.codec,
            media.clock_rate_hz,
            media.payload_type,
            remote,
            dtmf_payload_type=media.dtmf_payload_type,
            remote_rtcp=None if remote is None else media.remote_rtcp,
        )
        if not media.we_send:
            leg.hold()
        return leg

    def open_for_offer(self, codecs: tuple[str, ...]) -> Any:
        """A leg for our own offer of `codecs`; codec and remote address come with the answer."""
        codec = codecs[0]
        return self._engine.open_leg(
            codec, 8000, CODEC_PAYLOAD[codec], None, dtmf_payload_type=DEFAULT_DTMF_PT
        )

    def set_codec(self, leg: Any, media: Negotiated) -> None:
        """The answer to our offer chose `media.codec` (and its payload types): run the leg with it.
        Raises RuntimeError if media already flowed (the codec can no longer change)."""
        self._engine.set_codec(
            leg,
            media.codec,
            media.clock_rate_hz,
            media.payload_type,
            dtmf_payload_type=media.dtmf_payload_type,
        )

    def local_address(self, leg: Any) -> tuple[str, int]:
        return (self._config.media.advertised_host, int(leg.local_port))

    def update(self, leg: Any, media: Negotiated) -> None:
        """New remote address (answer, re-INVITE), with its a=rtcp address if any (else RTCP goes to the RTP
        port + 1); 0.0.0.0 (old-style hold) keeps the previous ones."""
        if media.remote_host != "0.0.0.0":
            leg.set_remote((media.remote_host, media.remote_port), rtcp=media.remote_rtcp)

    def set_hold(self, leg: Any, on_hold: bool) -> None:
        if on_hold:
            leg.hold()
        else:
            leg.unhold()

    def last_rtp_at(self, leg: Any) -> float | None:
        value = leg.last_rtp_received_at
        return None if value is None else float(value)

    async def forward_dtmf(self, leg: Any, queue: asyncio.Queue[Any]) -> None:
        """Copy RFC 4733 digits from the leg into the call's event queue (INFO digits arrive there too)."""
        async for digit in leg.dtmf:
            queue.put_nowait(digit)

    def close(self, leg: Any) -> None:
        with contextlib.suppress(Exception):
            leg.close()
