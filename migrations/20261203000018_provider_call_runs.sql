-- Which run of which job made each provider call. A run is one claim of the
-- job (its lease_seq: 1 for the first, one more for every retry, snooze or
-- rescue, never given back). With it, a payout's later run can tell whether
-- every earlier run is known not to have sent its request (refused before
-- processing, or held back by an open circuit: outcomes busy, rejected,
-- config, gated) or whether one may have reached the provider (accepted,
-- ambiguous, or ended mid-call and left no note); a refusal of a re-send is
-- only the provider's word on the payout in the first case.
ALTER TABLE provider_calls
    ADD COLUMN job_id bigint,
    ADD COLUMN run    integer;
