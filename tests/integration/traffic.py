"""The traffic every availability test runs through the edge: 32 clients at once, half over
HTTP/1.1 and half over HTTP/2, each cycling through reads, writes with JSON bodies, deletes,
job submissions and job reads, with an Idempotency-Key on every other write. Every outcome is
recorded by method, and `verify` checks what the database holds against what the clients were
told."""

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType

import httpx

from stack_facts import eventually
from tests.integration.stack import Stack

CLIENTS = 32
HTTP2_CLIENTS_PER_CONNECTION = 4  # like a browser multiplexing a page's requests
# Each client waits this long between its requests: 32 clients then offer ~600 requests/s, as
# much as the two-core machines serve without starving the containers being restarted.
PAUSE = 0.05
# A keyed write answered 409 has a first attempt still running under its key (the edge sent it
# again after losing the replica that runs it, or the client resent it): the client asks again
# with the same key, as the Idempotency-Key draft says, until the first attempt has ended and
# its answer is replayed. Up to this long: a dead replica's session ends within ~25 s
# (Postgres's TCP keepalives, compose.yaml), which releases the key.
IN_PROGRESS_PAUSE = 0.5
IN_PROGRESS_PATIENCE = 60
# What each request must be answered with. Anything else is unexpected; a 5xx or no HTTP answer
# at all (a transport error, a timeout) is a failure.
EXPECTED = {
    "GET /healthz": {200},
    "GET /items": {200},
    "GET /items/{id}": {200},
    "POST /items": {201},
    "PATCH /items/{id}": {200},
    "DELETE /items/{id}": {204},
    "POST /jobs": {202},
    "GET /jobs/{id}": {200},
}


@dataclass(frozen=True)
class Outcome:
    at: float  # time.monotonic() when the answer (or the error) came back
    request: str  # a key of EXPECTED
    keyed: bool
    status: int | None  # None: no HTTP answer
    detail: str  # the error, or the start of the body
    seconds: float  # from sending the request to its answer (or error), resends included
    version: str | None = None  # what /healthz reported
    content_type: str | None = None
    retry_after: str | None = None

    @property
    def method(self) -> str:
        return self.request.split(" ", 1)[0]

    @property
    def failed(self) -> bool:
        return self.status is None or self.status >= 500

    @property
    def expected(self) -> bool:
        return self.status in EXPECTED[self.request]

    @property
    def undecided(self) -> bool:
        """A failed write, whose effect the client cannot know where a host vanished: no
        answer, the edge's 502/504 after the app took it (its replica died after the commit, or
        before), or the app's 503 when Postgres stopped answering during the commit. With a
        key, the client would learn it by sending the write again; without one, it never can."""
        return self.method != "GET" and self.failed


@dataclass
class MixedTraffic:
    stack: Stack
    clients: int = CLIENTS
    pause: float = PAUSE
    all_keyed: bool = False  # every write with an Idempotency-Key, not every other one
    # Half the clients over HTTP/2. Off for an edge reload: Python's h2 stack cannot finish a
    # stream after the server's graceful GOAWAY (test_deploy.py checks HTTP/2 with curl).
    http2: bool = True
    # How often a client sends a request again when it got no HTTP answer at all, where HTTP
    # lets a client do so on its own (RFC 9110 9.2.2): a read, or a write with its
    # Idempotency-Key. Only where a connection can be cut without an answer: a killed replica,
    # an edge reload closing idle keep-alive connections.
    resends: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    created: dict[str, float] = field(default_factory=dict)  # item names answered 201: when
    deleted: set[str] = field(default_factory=set)  # item names answered 204
    jobs: set[str] = field(default_factory=set)  # job ids answered 202
    resent: list[Outcome] = field(default_factory=list)  # the no-answers that were sent again
    in_progress: list[Outcome] = field(default_factory=list)  # the 409s that were asked again
    # Undecided writes (Outcome.undecided): the item names of creates and deletes, the count
    # of job submissions.
    maybe_created: set[str] = field(default_factory=set)
    maybe_deleted: set[str] = field(default_factory=set)
    maybe_jobs: int = 0

    def __post_init__(self) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self._http2_clients: set[httpx.AsyncClient] = set()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> "MixedTraffic":
        self.started_at = self.stack.psql("SELECT now()")  # the database's clock, for jobs
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=90)

    # --- the clients --------------------------------------------------------------------------
    async def _run(self) -> None:
        h1_clients = self.clients // 2 if self.http2 else self.clients
        h2_clients = self.clients - h1_clients
        h1 = self.stack.async_client(limits=httpx.Limits(max_connections=h1_clients))
        h2 = [
            self.stack.async_client(http2=True)
            for _ in range(-(-h2_clients // HTTP2_CLIENTS_PER_CONNECTION))
        ]
        self._http2_clients = set(h2)
        try:
            clients = [h1] * h1_clients + [h2[n % len(h2)] for n in range(h2_clients)]
            await asyncio.gather(*(self._client(number, c) for number, c in enumerate(clients)))
        finally:
            for client in (h1, *h2):
                await client.aclose()

    async def _client(self, number: int, client: httpx.AsyncClient) -> None:
        # What this client created and still has, for its reads when a create fails.
        item: str | None = None
        job: str | None = None
        cycle = 0
        while not self._stop.is_set():
            keyed = self.all_keyed or (number + cycle) % 2 == 0  # every other write
            deleting = cycle % 2 == 1  # every other item is deleted again
            name = f"traffic-{self.run_id}-{number}-{cycle}"
            body = {"name": name, "description": "availability test", "price_cents": 100}
            created = await self._send(
                client, "POST /items", "/items", body, keyed, partial(self.maybe_created.add, name)
            )
            new_item = f"/items/{created.json()['id']}" if created is not None else None
            if created is not None:
                self.created[name] = time.monotonic()
            await self._send(client, "GET /healthz", "/healthz")
            await self._send(client, "GET /items", "/items?limit=20")
            if read := new_item or item:
                await self._send(client, "GET /items/{id}", read)
            if new_item:
                change = {"price_cents": cycle + 1}
                patch_keyed = self.all_keyed or not keyed
                await self._send(client, "PATCH /items/{id}", new_item, change, patch_keyed)
            payload = {"kind": "sleep", "payload": {"seconds": 0.01}}
            accepted = await self._send(
                client, "POST /jobs", "/jobs", payload, keyed, self._maybe_a_job
            )
            if accepted is not None:
                job_id = str(accepted.json()["id"])
                self.jobs.add(job_id)
                job = f"/jobs/{job_id}"
            if job:
                await self._send(client, "GET /jobs/{id}", job)
            if new_item and deleting:
                deleted = await self._send(
                    client, "DELETE /items/{id}", new_item, None, keyed,
                    partial(self.maybe_deleted.add, name),
                )  # fmt: skip
                if deleted is not None:
                    self.deleted.add(name)
            elif new_item:
                item = new_item
            cycle += 1

    async def _send(
        self,
        client: httpx.AsyncClient,
        request: str,
        path: str,
        body: Mapping[str, object] | None = None,
        keyed: bool = False,
        undecided: Callable[[], None] | None = None,
    ) -> httpx.Response | None:
        """One request, its outcome recorded; the response when it is the expected one.
        `undecided` is called when the outcome leaves the write's effect unknown."""
        if self._stop.is_set():
            return None
        headers = {"Idempotency-Key": uuid.uuid4().hex} if keyed else {}
        method = request.split(" ", 1)[0]
        resends = self.resends if keyed or request.startswith("GET ") else 0
        sender, fresh = client, None
        asked_again = False
        sent = time.monotonic()
        try:
            while True:
                try:
                    response = await sender.request(method, path, json=body, headers=headers)
                    now = time.monotonic()
                    if keyed and response.status_code == 409 and now - sent < IN_PROGRESS_PATIENCE:
                        if not asked_again:
                            asked_again = True
                            self.in_progress.append(
                                Outcome(now, request, keyed, 409, response.text[:120], now - sent)
                            )
                        await asyncio.sleep(IN_PROGRESS_PAUSE)
                        continue
                    break
                except httpx.HTTPError as error:
                    now = time.monotonic()
                    no_answer = Outcome(now, request, keyed, None, repr(error), now - sent)
                    if resends == 0:
                        self._record(no_answer, undecided)
                        await asyncio.sleep(self.pause)
                        return None
                    resends -= 1
                    self.resent.append(no_answer)
                    # Sent again on a new connection, as browsers do: the pool's other idle
                    # connections may have been closed at the same moment as this one.
                    if fresh is None:
                        fresh = self.stack.async_client(http2=client in self._http2_clients)
                    sender = fresh
        finally:
            if fresh is not None:
                await fresh.aclose()
        status = response.status_code
        version = (
            response.json()["version"] if request == "GET /healthz" and status == 200 else None
        )
        now = time.monotonic()
        outcome = Outcome(
            now,
            request,
            keyed,
            status,
            response.text[:120],
            now - sent,
            version,
            response.headers.get("content-type"),
            response.headers.get("retry-after"),
        )
        self._record(outcome, undecided)
        await asyncio.sleep(self.pause)
        return response if outcome.expected else None

    def _record(self, outcome: Outcome, undecided: Callable[[], None] | None) -> None:
        self.outcomes.append(outcome)
        if undecided and outcome.undecided:
            undecided()

    def _maybe_a_job(self) -> None:
        self.maybe_jobs += 1

    # --- what happened ------------------------------------------------------------------------
    @property
    def failures(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.failed]

    @property
    def unexpected(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if not outcome.expected]

    @property
    def writes(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.method != "GET"]

    def versions(self, during: Callable[[float], bool]) -> set[str]:
        """The versions /healthz reported in answers that came back when `during(at)` held."""
        return {o.version for o in self.outcomes if o.version is not None and during(o.at)}

    def summary(self) -> str:
        by_method: Counter[str] = Counter(o.method for o in self.outcomes)
        failed: Counter[str] = Counter(o.method for o in self.failures)
        methods = ", ".join(f"{m} {n} ({failed[m]} failed)" for m, n in sorted(by_method.items()))
        keyed = sum(o.keyed for o in self.writes)
        resent = f", {len(self.resent)} resent by the client" if self.resends else ""
        asked_again = len(self.in_progress)
        in_progress = f", {asked_again} asked again after a 409" if asked_again else ""
        return (
            f"{len(self.outcomes)} requests, {len(self.writes)} writes ({keyed} keyed), "
            f"{len(self.failures)} failed{resent}{in_progress}, "
            f"{len(self.unexpected)} unexpected; {methods}"
        )

    def verify(self, unanswered_bare_writes: bool = False) -> None:
        """Every request got its expected answer, and the database holds what they said.

        `unanswered_bare_writes` lets writes without a key go unanswered (they are printed):
        where a server closes idle keep-alive connections, one a client is sending on just then
        carries a request no server read, and HTTP forbids a client to send a bare write again
        on its own. verify_data then proves that no create or delete among them was applied."""
        print(f"traffic: {self.summary()}")
        for no_answer in self.resent:
            print(f"resent after no answer: {no_answer}")
        for conflict in self.in_progress:
            print(f"asked again after a 409: {conflict}")
        assert len(self.outcomes) > 0, "no traffic"
        lost = (
            [o for o in self.failures if unanswered_bare_write(o)] if unanswered_bare_writes else []
        )
        for outcome in lost:
            print(f"bare write without an answer: {outcome}")
        failures = [outcome for outcome in self.failures if outcome not in lost]
        assert failures == [], f"{failures[:10]}\nthe edge's errors:\n{self.edge_errors()}"
        unexpected = [outcome for outcome in self.unexpected if outcome not in lost]
        assert unexpected == [], unexpected[:10]
        self.verify_data()

    def edge_errors(self) -> str:
        """What Caddy logged about the requests it could not proxy (for a failure's report)."""
        lines = [
            f"{line.get('ts')} {line.get('msg')} {line.get('status', '')} {_request(line)}: "
            f"{line.get('error', '')}"
            for proxy in self.stack.containers("proxy")
            for line in self.stack.logs(proxy)
            if line.get("level") in ("warn", "error") or int(str(line.get("status") or 0)) >= 500
        ]
        return "\n".join(lines[-20:])

    def verify_data(self, jobs_done_within: float = 90, undecided_may_apply: bool = False) -> None:
        """The database holds exactly what the clients were told, nothing more or less.

        `undecided_may_apply`: where a host dies with requests in flight, a write that failed
        (Outcome.undecided) may have been committed; each such write may have taken effect, or
        not, and no other write."""
        # Every item answered 201 exists once (names are unique), unless answered 204 since;
        # and none exists that no client was told about.
        listed = set(
            self.stack.psql(
                f"SELECT name FROM items WHERE name LIKE 'traffic-{self.run_id}-%'"
            ).split()
        )
        told = self.created.keys() - self.deleted
        if undecided_may_apply:
            assert told - self.maybe_deleted <= listed, "missing: answered 201, never deleted"
            assert listed <= told | self.maybe_created, "no client was told of these"
        else:
            assert sorted(listed) == sorted(told)
        # Every job answered 202 reaches done, and no request created a job twice.
        done = eventually(lambda: self._jobs_unfinished() == 0, jobs_done_within, interval=1)
        assert done, f"{self._jobs_unfinished()} jobs answered 202 never reached done"
        since = f"created_at >= '{self.started_at}'"
        jobs = int(self.stack.psql(f"SELECT count(*) FROM jobs WHERE {since}"))
        extra = self.maybe_jobs if undecided_may_apply else 0
        assert len(self.jobs) <= jobs <= len(self.jobs) + extra, (jobs, len(self.jobs), extra)

    def _jobs_unfinished(self) -> int:
        if not self.jobs:
            return 0
        ids = ",".join(f"'{job}'" for job in self.jobs)
        query = f"SELECT count(*) FROM jobs WHERE id IN ({ids}) AND state <> 'done'"
        return int(self.stack.psql(query))


def _request(line: dict[str, object]) -> str:
    request = line.get("request")
    return f"{request.get('method')} {request.get('uri')}" if isinstance(request, dict) else ""


def unanswered_bare_write(outcome: Outcome) -> bool:
    return outcome.status is None and not outcome.keyed and outcome.method != "GET"
