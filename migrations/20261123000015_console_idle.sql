-- When a console session was last used. A session unused for longer than
-- `[console] idle_timeout_s` has ended, whatever its `expires_at`: a
-- signed-in browser left open is not left usable by whoever sits down at it.
ALTER TABLE console_sessions ADD COLUMN last_seen_at timestamptz NOT NULL DEFAULT now();
