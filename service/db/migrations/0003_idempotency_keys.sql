-- The first successful response to a request sent with an Idempotency-Key header
-- (draft-ietf-httpapi-idempotency-key-header), written in the transaction of the request's
-- effect and replayed to repeats of that request until expires_at.
CREATE TABLE idempotency_keys (
    key         text PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint text NOT NULL,  -- SHA-256 of method, path and canonical JSON body
    status      smallint NOT NULL CHECK (status BETWEEN 200 AND 299),
    body        json,  -- json, not jsonb: the text exactly as sent, key order included
    location    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

-- The purge's range scan.
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
