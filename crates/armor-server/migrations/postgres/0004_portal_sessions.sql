-- Portal sessions: the portal's sign-in credential, kept apart from FH-AUTH
-- tokens so that a session cookie is never an `Authorization` token (and a
-- token is never a session). Stored as SHA-256, like tokens; the same idle
-- and absolute expiry. Sign-out, disabling or deleting the user and a
-- password change delete the rows.
CREATE TABLE portal_sessions (
    session_hash BYTEA   PRIMARY KEY,
    user_id      BIGINT  NOT NULL REFERENCES users(id),
    created_at   BIGINT  NOT NULL,
    last_seen    BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL
);
CREATE INDEX portal_sessions_user ON portal_sessions(user_id);
