"""Ship a commit to a Docker host and roll it out without dropping a request.

    scripts/deploy ENV [--commit REV]      build (once), transfer, roll out
    scripts/deploy ENV --status            what serves, and how the last deploy went
    scripts/deploy ENV --rollback          roll back to the previous image

ENV names deploy/ENV.env (or is a path to an env file): compose variables plus the target,
DOCKER_HOST (e.g. ssh://deploy@host) or DOCKER_CONTEXT. An env file that names neither is
refused, unless it says DEPLOY_LOCAL_ENGINE=yes to deploy to this machine's own engine: the
shipped files name none until the runbook's step 3, and deploying them here would take ports
80/443 and start ACME. The target's engine is reached first, so a host that is unreachable or
whose SSH key has changed fails the deploy before anything is built, sent or changed.

Exit status: 0 done (--status: a healthy replica serves); 1 failed (--status: deployed, none
serving); 2 bad arguments; 3 (--status only) nothing deployed on the target. No registry is needed:
the images are built here from `git archive` (the app tagged with the commit, the edge with
the hash of caddy/, so Caddy restarts only when its configuration changed, the database with
the hash of postgres/) and sent with `docker save | docker load` when the target lacks them.
A running database is never recreated by a deploy: a new database image takes effect at its
next planned restart (README "Backups and restore").

With plain compose (the default), the rollout starts the new replicas beside the old ones,
waits until they are healthy and in Caddy's upstream set, then stops the old ones (SIGTERM:
their listeners close at once, so Caddy retries elsewhere, while in-flight requests finish
and running jobs are put back). If the new replicas are not healthy within
DEPLOY_HEALTH_TIMEOUT, or one exits, their last log lines are printed, they are removed, the
old ones keep serving, and the deploy exits non-zero.

With DEPLOY_MODE=swarm, the stack is rendered from compose.yaml + compose.staging.yaml +
compose.swarm.yaml and handed to `docker stack deploy`; Swarm rolls the update (start-first,
health-gated) and rolls it back by itself when the new tasks fail. Standard library only.

The package: target (env files, the engine, every docker and compose call), images (build
and ship), record (the deploy record), rollout (the interface), compose and swarm (its two
implementations), restore_point (the backup before a migration), cli (the commands).
"""
