-- A callback the reconciliation report lists (one that named no intent of
-- ours, or not the one it claimed; a word that contradicts its ended intent;
-- a success for another amount; a C2B confirmation refused at the door,
-- whose money has no other way into the books) stays on every report until
-- a person has looked at it and says what they found.
ALTER TABLE callback_inbox
    ADD COLUMN reviewed_at timestamptz,
    ADD COLUMN reviewed_by text,
    ADD COLUMN review_note text;

-- What the report reads: the callbacks still to review. The predicate is
-- the report's own (`store::reports::LISTED`, with `reviewed_at IS NULL`), word for word.
CREATE INDEX callback_inbox_to_review_idx ON callback_inbox (id)
    WHERE reviewed_at IS NULL
      AND (outcome IN ('unknown_token', 'unknown_request', 'wrong_provider', 'unmatched', 'reference_mismatch',
                       'contradicts_final', 'amount_mismatch')
           OR (kind = 'c2b-confirmation' AND outcome IN ('refused_source', 'malformed')));
