-- A credit's ledger key is its owner, party and reference joined by ':',
-- each part with its '%' and ':' escaped ('%25', '%3A'), so that party
-- 'shop:7' with reference 'sale' and party 'shop' with reference '7:sale'
-- are two credits. Keys written before joined the parts as they were: a
-- credit whose parts held either character, sent again, would not find its
-- first one under the new key and would be credited a second time. Each
-- credit's key is rewritten from its own parts (the owner, the party of its
-- credited account, and the reference its credited leg keeps as its memo);
-- a key that is already in the new form is left as it is.
UPDATE ledger_transfers t
SET key = 'credit:' || replace(replace(t.owner, '%', '%25'), ':', '%3A')
       || ':' || replace(replace(a.ref, '%', '%25'), ':', '%3A')
       || ':' || replace(replace(e.memo, '%', '%25'), ':', '%3A')
FROM ledger_entries e
JOIN ledger_accounts a ON a.id = e.account_id
WHERE t.kind = 'credit'
  AND e.transfer_id = t.id
  AND e.amount > 0
  AND a.kind = 'party'
  AND t.key <> 'credit:' || replace(replace(t.owner, '%', '%25'), ':', '%3A')
       || ':' || replace(replace(a.ref, '%', '%25'), ':', '%3A')
       || ':' || replace(replace(e.memo, '%', '%25'), ':', '%3A');
