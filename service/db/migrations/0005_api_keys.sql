-- API keys (service/services/keys.py). The key itself is shown once and never stored: only
-- its SHA-256 digest, found by the key's public id and compared in constant time.
CREATE TABLE api_keys (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id  text NOT NULL UNIQUE CHECK (public_id ~ '^[0-9a-f]{16}$'),
    digest     bytea NOT NULL CHECK (length(digest) = 32),
    name       text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    scopes     text[] NOT NULL
               CHECK (scopes <@ ARRAY['items:read', 'items:write', 'jobs:read', 'jobs:write']),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz
);

-- A name is what logs and metrics show: one live key per name (a revoked name may be reused).
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;
