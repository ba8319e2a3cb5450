-- The admin console: its users, their sign-in sessions, and the audit log of
-- everything done through it.

-- People who sign in to the console with a password. Only an Argon2id hash
-- (PHC string, salt included) is stored. The role decides what the server
-- lets them do; `disabled_at` ends every session of the user at once.
CREATE TABLE console_users (
    id            uuid        PRIMARY KEY,
    username      text        NOT NULL UNIQUE,
    password_hash text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('viewer', 'approver', 'operator', 'admin')),
    created_at    timestamptz NOT NULL,
    disabled_at   timestamptz
);

-- One row per signed-in browser. The cookie carries a random token; only its
-- SHA-256 is stored, so a copy of this table signs no one in. `csrf_token`
-- is the session's token every form must send back. A session signed in with
-- an admin API key has no user row (`user_id` NULL), the key's name as actor
-- and its prefix, so that revoking the key ends the session too.
CREATE TABLE console_sessions (
    token_hash   bytea       PRIMARY KEY,
    user_id      uuid        REFERENCES console_users (id),
    key_prefix   text,
    actor        text        NOT NULL,
    role         text        NOT NULL CHECK (role IN ('viewer', 'approver', 'operator', 'admin')),
    csrf_token   text        NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);

-- Expired sessions are deleted at sign-in, oldest first.
CREATE INDEX console_sessions_expiry_idx ON console_sessions (expires_at);

-- Every console action, allowed or refused: who, what, on what, when, from
-- which address. Append-only; the console shows it and never changes it.
CREATE TABLE console_audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor       text        NOT NULL,
    role        text,
    action      text        NOT NULL,
    target      text,
    outcome     text        NOT NULL,
    detail      text,
    remote_addr text
);

-- The audit page lists newest first, optionally one actor's.
CREATE INDEX console_audit_actor_idx ON console_audit (actor, id DESC);
