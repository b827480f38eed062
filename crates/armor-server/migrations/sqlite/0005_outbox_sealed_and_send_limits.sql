-- Outbox bodies hold codes: each is sealed under the master key like
-- API-key secrets (AES-256-GCM; associated data: the row's id, channel and
-- recipient, and the master-key version), and wiped once delivered.
-- `body` stays for rows written before this migration: the server seals
-- those still pending when it starts, and the ones already sent are
-- wiped here.
ALTER TABLE outbox ADD COLUMN mk_version INTEGER;
ALTER TABLE outbox ADD COLUMN nonce BLOB;
ALTER TABLE outbox ADD COLUMN ciphertext BLOB;
UPDATE outbox SET body = '' WHERE sent_at IS NOT NULL;

-- Messages anyone can make the server send (password-reset mails, phone
-- codes), counted per target: a keyed hash of the scope and the target
-- (an address, a number, a client address), the end of the current
-- window and the messages counted in it. Counted in the database so the
-- limit holds across nodes and restarts.
CREATE TABLE send_limits (
    key        BLOB    PRIMARY KEY,
    window_end INTEGER NOT NULL,
    hits       INTEGER NOT NULL
);
CREATE INDEX send_limits_window_end ON send_limits(window_end);
