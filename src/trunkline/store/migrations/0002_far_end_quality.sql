-- Trunkline call store, version 2: the far end's view of our stream, from its RTCP receiver reports.
-- NULL means the far end sent no RTCP report on our stream (or the call predates this version).
-- far_end_loss_pct: loss of the latest report interval (RTCP fraction lost x 100), not cumulative loss.
-- far_end_jitter_ms: the latest reported interarrival jitter. round_trip_ms: the largest round trip seen.
-- No CHECK constraints: a bad value from a far end must not get the whole call-end record rejected.
-- The table-level grants and the row-level policy of 0001 cover new columns as they are.

ALTER TABLE trunkline.calls
    ADD COLUMN far_end_loss_pct  double precision,
    ADD COLUMN far_end_jitter_ms double precision,
    ADD COLUMN round_trip_ms     double precision;
