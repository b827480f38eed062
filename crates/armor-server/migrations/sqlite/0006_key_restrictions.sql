-- Keys that can do less and live shorter. Every column is NULL for a key
-- without that restriction, so keys made before this migration (and keys
-- made without the new fields) behave as they always did.
--   expires_at     Unix second from which the key is refused (key_expired)
--   permissions    JSON array of permission names the key may use (its
--                  user's permissions still apply: the key acts with both)
--   allowed_routes JSON array of "METHOD /path" or "METHOD /prefix/*"
--   allowed_ips    JSON array of CIDRs the request's peer must be in
--   rate_limit     requests per rate_window seconds
--   rolled_from    the key this one replaced (POST .../roll)
--   rolled_until   on a key that was rolled: the end of its grace period
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN permissions TEXT;
ALTER TABLE api_keys ADD COLUMN allowed_routes TEXT;
ALTER TABLE api_keys ADD COLUMN allowed_ips TEXT;
ALTER TABLE api_keys ADD COLUMN rate_limit INTEGER;
ALTER TABLE api_keys ADD COLUMN rate_window INTEGER;
ALTER TABLE api_keys ADD COLUMN rolled_from TEXT;
ALTER TABLE api_keys ADD COLUMN rolled_until INTEGER;
