"""An async FastAPI service on asyncpg, deployed behind Caddy by Hypercorn."""
