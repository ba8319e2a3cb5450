-- Which run of which job made each provider call. A run is one claim of the
-- job (its lease_seq: 1 for the first, one more for every retry, snooze or
-- rescue, never given back). A send is noted twice: as `sending`, committed
-- just before the request goes out, and with its answer after. With the run,
-- a payout's later run can tell whether an earlier one may have reached the
-- provider (it was answered at all, or it was `sending` and never learned
-- that its request was refused before processing); a refusal of a re-send
-- is only the provider's word on the payout when none did.
ALTER TABLE provider_calls
    ADD COLUMN job_id bigint,
    ADD COLUMN run    integer;
