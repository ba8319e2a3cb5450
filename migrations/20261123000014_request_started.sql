-- When Tuma was about to send a request that the provider names itself
-- (a Daraja STK push: Daraja assigns its CheckoutRequestID, so the request
-- cannot be re-sent under the same id). Written and committed before the
-- call, cleared only when the provider refused it before processing. A
-- rerun of the prompt that finds it set does not prompt again: the payer
-- may already have the first prompt on their phone, and its callback (which
-- names the intent by its token) or the prompt's expiry decides.
ALTER TABLE intents ADD COLUMN request_started_at timestamptz;
