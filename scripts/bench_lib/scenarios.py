"""The scenarios, each on endpoints that exist for real, rendered for wrk (Lua) and h2load (URIs).

h2load repeats fixed requests (it cannot vary a body, a header or mix methods), so the write and
mixed scenarios run on HTTP/1.1 only, through wrk's Lua `request` hook.
"""

import json
import re
import uuid
from dataclasses import dataclass

ENCODINGS = "zstd, gzip"  # what browsers send: the list scenario exercises Caddy's encoder
LIST_LIMIT = 100  # the largest page the API serves: a ~60 KB JSON body
# An API key as service.keys makes them (svc_<id>_<secret>): safe inside a Lua string literal.
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    h2load: bool  # GET-only with fixed URIs: h2load can drive it


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("healthz", "GET /healthz (no I/O)", h2load=True),
        Scenario("item", "GET /items/{id} (one indexed read)", h2load=True),
        Scenario("create", "POST /items (one write)", h2load=False),
        Scenario(
            "create-keyed", "POST /items with a fresh Idempotency-Key (one write)", h2load=False
        ),
        Scenario("list", f"GET /items?limit={LIST_LIMIT} (large JSON, compressed)", h2load=True),
        Scenario(
            "mixed",
            "mixed: 60% item, 15% list of 20, 15% create, 10% POST /jobs",
            h2load=False,
        ),
    )
}

# wrk hands the Lua `done` hook its own statistics; one JSON line carries them out.
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

_PREAMBLE = """
local ids = {%(ids)s}
local prefix = "%(prefix)s"
local counter = 0
local get_headers = {%(auth)s["Accept-Encoding"] = "%(encodings)s"}
local post_headers = {%(auth)s["Content-Type"] = "application/json",
  ["Accept-Encoding"] = "%(encodings)s"}
local keyed_headers = {%(auth)s["Content-Type"] = "application/json",
  ["Accept-Encoding"] = "%(encodings)s"}
math.randomseed(%(seed)d)

local function get(path)
  return wrk.format("GET", path, get_headers)
end

-- keyed: the same write with an Idempotency-Key of its own, unique like the name (the run's
-- prefix and number); wrk.format renders the headers at once, so one table serves every request.
local function create(keyed)
  counter = counter + 1
  local headers = post_headers
  if keyed then
    headers = keyed_headers
    headers["Idempotency-Key"] = string.format("%%s-key-%%d", prefix, counter)
  end
  return wrk.format("POST", "/items", headers, string.format(
    '{"name":"%%s-%%d","description":"written by scripts/bench","price_cents":%%d}',
    prefix, counter, counter))
end

local function item()
  return get("/items/" .. ids[math.random(#ids)])
end
"""

_REQUEST = {
    "healthz": 'request = function() return get("/healthz") end',
    "item": "request = item",
    "create": "request = create",
    "create-keyed": "request = function() return create(true) end",
    "list": f'request = function() return get("/items?limit={LIST_LIMIT}") end',
    "mixed": """
request = function()
  local r = math.random(100)
  if r <= 60 then return item() end
  if r <= 75 then return get("/items?limit=20") end
  if r <= 90 then return create() end
  return wrk.format("POST", "/jobs", post_headers, '{"kind":"sleep","payload":{"seconds":0}}')
end
""",
}


def authorization(api_key: str) -> str:
    """The header's value; refuses what a Lua literal or a command line could misread."""
    if not _TOKEN.fullmatch(api_key):
        raise ValueError("the API key has characters no key of service.keys has")
    return f"Bearer {api_key}"


def wrk_script(
    scenario: str, item_ids: list[int], seed: int, api_key: str | None, delay_ms: float = 0
) -> str:
    """A complete wrk script; item names carry a fresh prefix (names are unique in the API).

    Every request carries `Authorization: Bearer <api_key>` (none when api_key is None: an
    anonymous client). delay_ms paces each connection (wrk's `delay` hook), for a steady rate
    rather than as fast as the server answers.
    """
    auth = f'["Authorization"] = "{authorization(api_key)}", ' if api_key else ""
    preamble = _PREAMBLE % {
        "ids": ",".join(map(str, item_ids)),
        "prefix": f"bench-{uuid.uuid4().hex[:12]}",
        "encodings": ENCODINGS,
        "seed": seed,
        "auth": auth,
    }
    pacing = f"delay = function() return {round(delay_ms)} end\n" if delay_ms else ""
    return preamble + _REQUEST[scenario] + "\n" + pacing + _DONE


def h2load_paths(scenario: str, item_ids: list[int]) -> list[str]:
    """The URI paths h2load cycles through (round robin) for a GET-only scenario."""
    if scenario == "healthz":
        return ["/healthz"]
    if scenario == "item":
        return [f"/items/{item_id}" for item_id in item_ids[:20]]
    if scenario == "list":
        return [f"/items?limit={LIST_LIMIT}"]
    raise ValueError(f"h2load cannot drive the {scenario} scenario")


def seed_item(number: int, run_id: str) -> str:
    """The JSON body of one seeded item: a description long enough for the list to be large."""
    return json.dumps(
        {
            "name": f"bench-seed-{run_id}-{number}",
            "description": f"seeded by scripts/bench, item {number}. " + "lorem ipsum " * 40,
            "price_cents": 100 + number,
        }
    )
