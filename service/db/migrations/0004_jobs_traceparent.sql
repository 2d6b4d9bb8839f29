-- The W3C traceparent of the request that enqueued a job (NULL when it was not traced), so
-- that the job's span links to that request in whichever replica runs it, after restarts too.
-- A nullable column without a default: a catalog change only, no table rewrite.
ALTER TABLE jobs ADD COLUMN traceparent text;
