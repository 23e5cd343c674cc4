"""The media core: RTP/RTCP, jitter buffer, DTMF, pacing, and the thin asyncio leg adapter."""
