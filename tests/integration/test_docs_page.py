"""The docs page as a user opens it: Debian's headless Chromium, driven by Playwright, loads
https://localhost:PORT/docs through Caddy with Caddy's root CA trusted in the browser's own
certificate store. Swagger UI renders every operation, the CSP reports no violation, and no
request leaves the stack: any other origin is recorded and blocked."""

import shutil
import subprocess
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image
from playwright.sync_api import ConsoleMessage, Page, Route, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from tests.integration.stack import Stack
from tests.project import ROOT

SCREENSHOT = ROOT / "docs" / "swagger-ui.png"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Records what the CSP refuses, from before the page's first script runs. Playwright injects it
# through the DevTools protocol, which the page's CSP does not govern.
VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""

# What Chromium reports when a network interface comes or goes (Docker adds them).
NETWORK_CHANGED = "ERR_NETWORK_CHANGED"
# "get /items/{item_id}" for each operation Swagger UI drew.
OPERATIONS = """blocks => blocks.map(block =>
  block.querySelector(".opblock-summary-method").textContent.toLowerCase() + " " +
  block.querySelector(".opblock-summary-path").dataset.path)"""


@dataclass
class Visit:
    """What the browser did while it showed the docs page."""

    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)
    tried: str = ""  # the status code "Try it out" showed
    screenshot: bytes = b""

    def network_changed(self, error: str = "") -> bool:
        return any(NETWORK_CHANGED in line for line in [error, *self.console])


def trust_store(home: Path, ca_file: Path) -> None:
    """Caddy's root in an NSS database under `home`, where Chromium on Linux reads its CAs
    ($HOME/.pki/nssdb): real trust, for this browser only, no certificate error ignored."""
    database = home / ".pki" / "nssdb"
    database.mkdir(parents=True)
    certutil = ["certutil", "-d", f"sql:{database}"]
    subprocess.run([*certutil, "-N", "--empty-password"], check=True)
    subprocess.run([*certutil, "-A", "-n", "caddy-local", "-t", "C,,", "-i", ca_file], check=True)


def try_it_out(page: Page, path: str) -> str:
    """Expands GET `path`, sends it from the page, returns the status code the page shows: the
    response body is highlighted and the request goes out under connect-src."""
    block = page.locator(".opblock-get", has=page.locator(f'[data-path="{path}"]'))
    block.locator(".opblock-summary").click()
    block.locator(".try-out__btn").click()
    block.locator(".execute").click()
    status = block.locator(".live-responses-table tr.response .response-col_status").first
    status.wait_for(timeout=10_000)
    return status.inner_text().strip()


def visit_docs(stack: Stack, home: Path, attempts: int = 5) -> Visit:
    """One visit; again when the host's network changed under it: Chromium aborts what is in
    flight when an interface comes or goes, as Docker's do while other stacks start."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed (.ci/run installs it)"
    trust_store(home, stack.ca_file)
    for attempt in range(1, attempts + 1):
        visit = Visit()
        try:
            show_docs(chromium, home, stack.base_url, visit)
        except PlaywrightError as error:
            if attempt == attempts or not visit.network_changed(str(error)):
                raise
        else:
            if attempt == attempts or not visit.network_changed():
                return visit
        print(f"attempt {attempt}: the network changed, visiting again")
    raise AssertionError("unreachable")


def show_docs(chromium: str, home: Path, origin: str, visit: Visit) -> None:
    def only_the_stack(route: Route) -> None:
        url = route.request.url
        visit.requests.append(url)
        if f"{urlsplit(url).scheme}://{urlsplit(url).netloc}" == origin:
            route.continue_()
        else:
            visit.blocked.append(url)
            route.abort("blockedbyclient")

    def console(message: ConsoleMessage) -> None:
        visit.console.append(f"{message.type}: {message.text}")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, env={"HOME": str(home)})
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.add_init_script(VIOLATIONS)
            page.route("**/*", only_the_stack)
            page.on("console", console)
            page.on("pageerror", lambda error: visit.console.append(f"pageerror: {error}"))
            page.goto(f"{origin}/docs", wait_until="networkidle")
            page.wait_for_selector(".opblock-summary-path", timeout=15_000)
            visit.operations = page.eval_on_selector_all(".opblock", OPERATIONS)
            # Before "Try it out": the response it shows (a date, a request id) would make the
            # committed picture change with every run.
            visit.screenshot = page.screenshot(full_page=True)
            visit.tried = try_it_out(page, "/healthz")
            visit.violations = page.evaluate("window.__violations")
        finally:
            browser.close()


@pytest.fixture(scope="module")
def visit(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Visit:
    return visit_docs(stack, tmp_path_factory.mktemp("chromium-home"))


def test_swagger_ui_renders_every_operation(stack: Stack, visit: Visit) -> None:
    with stack.client() as client:
        document = client.get("/openapi.json").json()
    expected = sorted(
        f"{method} {path}"
        for path, operations in document["paths"].items()
        for method in operations
        if method in METHODS
    )
    assert expected, "the OpenAPI document lists no operation"
    assert sorted(visit.operations) == expected
    assert visit.tried == "200"


def test_no_csp_violation_and_no_console_error(visit: Visit) -> None:
    assert visit.violations == []
    assert [line for line in visit.console if not line.startswith(("log", "info"))] == []


def test_no_request_leaves_the_stack(stack: Stack, visit: Visit) -> None:
    assert visit.blocked == []
    own = f"https://localhost:{stack.https_port}/"
    assert f"{own}docs/assets/swagger-ui-bundle.js" in visit.requests
    assert f"{own}openapi.json" in visit.requests


def test_screenshot_shows_the_page(visit: Visit) -> None:
    SCREENSHOT.write_bytes(visit.screenshot)
    assert SCREENSHOT.stat().st_size > 50_000, "a near-empty screenshot"
    image = Image.open(BytesIO(visit.screenshot)).convert("L")
    colours = image.getcolors(maxcolors=1 << 16) or []
    assert len(colours) > 32, "a blank or flat screenshot"
    assert image.height > 1000, "the page is no longer than one screen: operations missing"
