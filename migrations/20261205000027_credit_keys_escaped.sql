-- A credit's ledger key is its owner, party and reference joined by ':',
-- each part with its '%' and ':' escaped ('%25', '%3A'), so that party
-- 'shop:7' with reference 'sale' and party 'shop' with reference '7:sale'
-- are two credits. Keys written before joined the parts as they were: a
-- credit whose parts held either character, sent again, would not find its
-- first one under the new key and would be credited a second time. Each
-- credit's key is rewritten from its own parts (the owner, the party of its
-- credited account, and the reference its credited leg keeps as its memo);
-- a key that is already in the new form is left as it is.
CREATE TEMPORARY TABLE credit_rekeys ON COMMIT DROP AS
SELECT t.id,
       'credit:' || replace(replace(t.owner, '%', '%25'), ':', '%3A')
       || ':' || replace(replace(a.ref, '%', '%25'), ':', '%3A')
       || ':' || replace(replace(e.memo, '%', '%25'), ':', '%3A') AS new_key
FROM ledger_transfers t
JOIN ledger_entries e ON e.transfer_id = t.id AND e.amount > 0
JOIN ledger_accounts a ON a.id = e.account_id AND a.kind = 'party'
WHERE t.kind = 'credit';

DELETE FROM credit_rekeys r USING ledger_transfers t WHERE t.id = r.id AND t.key = r.new_key;

-- A credit sent again after keys were escaped and before this migration
-- was written a second time under the new key: that key is taken, so the
-- old one keeps its key (the double credit is in the books either way, and
-- the two transfers name the same reference for whoever reconciles them).
DELETE FROM credit_rekeys r
WHERE EXISTS (SELECT 1 FROM ledger_transfers x
              WHERE x.key = r.new_key AND x.id NOT IN (SELECT id FROM credit_rekeys));

-- In two steps, so that one credit's new key may be another's old one
-- (references 'a%3Ab' and 'a:b' of the same party) whatever the order.
UPDATE ledger_transfers t SET key = 'rekey:' || t.id FROM credit_rekeys r WHERE r.id = t.id;
UPDATE ledger_transfers t SET key = r.new_key FROM credit_rekeys r WHERE r.id = t.id;
