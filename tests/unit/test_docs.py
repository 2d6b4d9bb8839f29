"""The docs page as the app serves it: Swagger UI from the app's own files, no inline script,
nothing from another origin (the browser test, tests/integration/test_docs_page.py, runs it)."""

import re

import httpx

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>")
URL_ATTRIBUTE = re.compile(r'\b(?:src|href)="([^"]*)"')


async def test_docs_page_loads_only_the_apps_own_files(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert not INLINE_SCRIPT.search(page.text), "an inline script: the edge's CSP blocks it"
    urls = URL_ATTRIBUTE.findall(page.text)
    assert len(urls) == 4, urls
    for url in urls:
        assert url.startswith("/docs/assets/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0, url
    assert 'data-openapi-url="/openapi.json"' in page.text


async def test_swagger_ui_is_the_pinned_bundle_and_redoc_is_off(
    client: httpx.AsyncClient,
) -> None:
    bundle = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in bundle.text
    start = await client.get("/docs/assets/docs.js")
    assert "SwaggerUIBundle" in start.text
    for path in ("/redoc", "/docs/oauth2-redirect"):
        # Off: ReDoc needs a blob: worker and inline styles; API keys need no OAuth2 redirect.
        response = await client.get(path)
        assert response.status_code == 404, path
    schema = (await client.get("/openapi.json")).json()
    assert not any(path.startswith("/docs") for path in schema["paths"])
