-- User administration and account security (issue #3).

-- Failed-login counters and locks, per user; times from the server's clock.
CREATE TABLE login_lockouts (
    user_id      INTEGER PRIMARY KEY REFERENCES users(id),
    failures     INTEGER NOT NULL DEFAULT 0,
    window_start INTEGER NOT NULL,
    locked_until INTEGER NOT NULL DEFAULT 0,
    lock_count   INTEGER NOT NULL DEFAULT 0
);

-- Single-use codes: activation, reset, phone verification, login second
-- factor. Only the SHA-256 of a code is stored.
CREATE TABLE user_codes (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    purpose     TEXT    NOT NULL
                CHECK (purpose IN ('activation', 'reset', 'phone', 'login')),
    code_hash   BLOB    NOT NULL,
    expires_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    detail      TEXT
);
CREATE UNIQUE INDEX user_codes_hash ON user_codes(code_hash);
CREATE INDEX user_codes_user ON user_codes(user_id, purpose);

-- Second factors and challenge phrase. The TOTP secret is sealed under the
-- master key like API-key secrets (associated data "totp:<userId>").
CREATE TABLE user_security (
    user_id          INTEGER PRIMARY KEY REFERENCES users(id),
    challenge_phrase TEXT,
    totp_mk_version  INTEGER,
    totp_nonce       BLOB,
    totp_ciphertext  BLOB,
    totp_enabled     INTEGER NOT NULL DEFAULT 0,
    totp_last_step   INTEGER NOT NULL DEFAULT 0,
    phone            TEXT,
    phone_verified   INTEGER NOT NULL DEFAULT 0
);

-- Free-form security information, by reference key.
CREATE TABLE security_info (
    user_id       INTEGER NOT NULL REFERENCES users(id),
    reference_key TEXT    NOT NULL,
    value         TEXT    NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (user_id, reference_key)
);

-- Messages for users (invitations, reset and phone codes): sent by SMTP
-- when configured, or read by an operator with `armor admin outbox`.
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    channel    TEXT    NOT NULL CHECK (channel IN ('email', 'sms')),
    recipient  TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    sent_at    INTEGER
);

CREATE INDEX audit_log_account ON audit_log(account_id, id);
