"""The docs page: Swagger UI served by the app itself, with no CDN and no inline script.

Swagger UI's files are swagger-ui-dist's, as the PyPI package fastapi-offline ships them (its
version is pinned in uv.lock, so the image and the tests serve the same bytes). The page starts
Swagger UI from a file of ours (docs_assets/docs.js) rather than FastAPI's inline <script>, so
that the edge's Content-Security-Policy (caddy/Caddyfile) can forbid inline scripts.
"""

from html import escape

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
ASSETS_PATH = f"{DOCS_PATH}/assets"
# Ours first (docs.js), then the package's: swagger-ui-bundle.js, swagger-ui.css, favicon.png.
ASSETS = StaticFiles(
    packages=[("service.api", "docs_assets"), ("fastapi_offline", "static")],
)


def install_docs(api: FastAPI) -> None:
    """GET /docs and its assets, for the OpenAPI document at api.openapi_url."""
    page = _page(f"{api.title} - API docs", api.openapi_url or "")

    @api.get(DOCS_PATH, include_in_schema=False, response_class=HTMLResponse)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page)

    api.mount(ASSETS_PATH, ASSETS, name="docs-assets")


def _page(title: str, openapi_url: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)}</title>
<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon.png">
<link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{escape(openapi_url)}"></div>
<script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script src="{ASSETS_PATH}/docs.js"></script>
</body>
</html>
"""
