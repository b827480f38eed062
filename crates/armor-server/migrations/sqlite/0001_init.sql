-- Accounts, users, roles and memberships.
CREATE TABLE accounts (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'Active',
    parent_id   INTEGER REFERENCES accounts(id),
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    account_id    INTEGER NOT NULL REFERENCES accounts(id),
    email         TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    first_name    TEXT    NOT NULL DEFAULT '',
    last_name     TEXT    NOT NULL DEFAULT '',
    password_hash TEXT,
    status        TEXT    NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'invited', 'disabled', 'deleted')),
    created_at    INTEGER NOT NULL
);

CREATE TABLE roles (
    id       INTEGER PRIMARY KEY,
    name     TEXT    NOT NULL UNIQUE,
    builtin  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE role_permissions (
    role_id    INTEGER NOT NULL REFERENCES roles(id),
    permission TEXT    NOT NULL,
    PRIMARY KEY (role_id, permission)
);

CREATE TABLE memberships (
    user_id    INTEGER NOT NULL REFERENCES users(id),
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    role_id    INTEGER NOT NULL REFERENCES roles(id),
    PRIMARY KEY (user_id, account_id)
);

-- API keys: the secret is stored only sealed under the master key
-- (AES-256-GCM, key id and master-key version as associated data).
CREATE TABLE api_keys (
    id          TEXT    PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    account_id  INTEGER NOT NULL REFERENCES accounts(id),
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    last_used   INTEGER,
    status      TEXT    NOT NULL DEFAULT 'Active' CHECK (status IN ('Active', 'Deleted')),
    deleted_at  INTEGER,
    mk_version  INTEGER NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL
);
CREATE INDEX api_keys_user ON api_keys(user_id);

-- Password login: single-use codes, then tokens; both stored as SHA-256.
CREATE TABLE auth_codes (
    code_hash  BLOB    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id),
    expires_at INTEGER NOT NULL
);

CREATE TABLE tokens (
    token_hash  BLOB    PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tokens_user ON tokens(user_id);

-- Append-only security events.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    account_id  INTEGER,
    actor_id    INTEGER,
    credential  TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    target      TEXT,
    address     TEXT,
    detail      TEXT
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

INSERT INTO roles (id, name, builtin) VALUES
    (1, 'Account Owner', 1),
    (2, 'User', 1),
    (3, 'Read Only', 1);
INSERT INTO role_permissions (role_id, permission) VALUES
    (1, 'API Keys All Read'),
    (1, 'API Keys All Delete'),
    (1, 'API Keys Self Manage'),
    (1, 'Users Read'),
    (1, 'Users Manage'),
    (1, 'Audit Log Read'),
    (2, 'API Keys Self Manage');
