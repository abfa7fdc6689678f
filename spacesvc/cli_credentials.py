"""``spacesvc credentials``: the workload's side of delivery (docs/workloads.md).

It reads the credentials of the environment its token is bound to from a running spacesvc and
prints them once in a format (``credential_process`` for the AWS SDKs and CLI, shell ``export``
lines, an rclone remote, JSON); or, with ``--watch``, keeps a file current, rewritten whole
(temporary file + rename) whenever they change; or, with ``--exec``, runs a command with them in
its environment and restarts it when they change. Changes are learnt from a watch on the
credentials route (``Prefer: wait`` + ``If-None-Match``), so they arrive within a second.

The token is read from a file, never from the command line, where every user of the machine can
read it in the process list. Whatever goes wrong is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

FORMATS = ("credential-process", "env", "rclone", "json")
# A watch asks the service to hold it this long (the service holds at most 60 s).
WATCH_SECONDS = 50
# Bounds of one request beyond its watch.
CONNECT_SECONDS = 5.0
REQUEST_SECONDS = 15.0
# Waits between attempts while the service cannot be reached.
BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# A command asked to stop (SIGTERM) is killed if it has not exited after this long.
STOP_SECONDS = 10.0
RCLONE_REMOTE = "spaces"
NO_TOKEN_ON_THE_COMMAND_LINE = (
    "the token is never taken on the command line (every user can read it in the process list): "
    "write it to a file and pass --token-file FILE or set SPACESVC_TOKEN_FILE"
)


class CredentialsError(Exception):
    """A failure to report in one line; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(CredentialsError):
    """The service could not answer now (no connection, a timeout, 429 or 5xx): worth retrying."""


class Refused(CredentialsError):
    """The service refused the request (a 4xx): retrying the same request will not help, unless
    an admin changes something (``retryable``: 404, Spaces not configured or not enabled yet)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def add_parser(commands: Any) -> None:
    """Add ``credentials`` to the ``spacesvc`` command's subcommands."""
    parser = commands.add_parser(
        "credentials",
        help="print or keep current the Spaces credentials of a workload (docs/workloads.md)",
        allow_abbrev=False,
        description="Read the credentials of the token's environment from a running spacesvc.",
        epilog="With --exec, the command goes last, after --: spacesvc credentials --exec -- CMD [ARG ...]",
    )
    parser.add_argument("--url", help="the service, e.g. http://spacesvc:8080 (default: $SPACESVC_URL)")
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="a file holding the spaces:credentials token (default: $SPACESVC_TOKEN_FILE)",
    )
    parser.add_argument("--token", nargs="?", const="", help=argparse.SUPPRESS)
    parser.add_argument("--environment", metavar="ID", help="the environment's id (default: the token's own)")
    parser.add_argument("--format", choices=FORMATS, default="json", help="what to print or write (default json)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write to FILE (mode 0600) instead of stdout")
    parser.add_argument("--watch", action="store_true", help="with --out: rewrite FILE whenever the credentials change")
    parser.add_argument(
        "--exec",
        action="store_true",
        help="run the command after -- with the credentials in its environment; restart it when they change",
    )
    parser.add_argument("exec_command", nargs="*", metavar="CMD", help=argparse.SUPPRESS)


def run(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """``spacesvc credentials``: the exit status (the command's own with --exec)."""
    try:
        plan = Plan.from_args(args, environ)
        return asyncio.run(plan.run())
    except CredentialsError as error:
        print(f"spacesvc credentials: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        return 130


@dataclass(frozen=True)
class Delivery:
    """One answer of the credentials route: its ETag and its JSON body."""

    etag: str | None
    body: dict[str, Any] = field(repr=False)
    received: float = field(default_factory=time.monotonic)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def age(self) -> float:
        return time.monotonic() - self.received

    def refresh_in(self) -> float | None:
        """Seconds until a credential_process answer is half-way from its receipt to its
        Expiration (then it is fetched again, though unchanged); None for the other formats."""
        expiration = self.body.get("Expiration")
        if not isinstance(expiration, str):
            return None
        lifetime = (datetime.fromisoformat(expiration) - self.received_at).total_seconds()
        return self.received + lifetime / 2 - time.monotonic()


class Service:
    """The credentials route of one spacesvc, for one token."""

    def __init__(self, url: str, token: str, environment: str | None, representation: str) -> None:
        self.url = url.rstrip("/")
        self._token = token
        path = f"/api/environments/{environment}/spaces/credentials" if environment else "/api/spaces/credentials"
        query = "?format=credential-process" if representation == "credential-process" else ""
        self.endpoint = f"{self.url}{path}{query}"
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Service:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_connect=CONNECT_SECONDS))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(self, known: Delivery | None = None, wait: int | None = None) -> Delivery | None:
        """The credentials; None when ``known`` is still current (after a watch of ``wait`` seconds)."""
        assert self._session is not None
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if known is not None and known.etag is not None:
            headers["If-None-Match"] = known.etag
            if wait is not None:
                headers["Prefer"] = f"wait={wait}"
        timeout = aiohttp.ClientTimeout(total=REQUEST_SECONDS + (wait or 0), sock_connect=CONNECT_SECONDS)
        try:
            async with self._session.get(self.endpoint, headers=headers, timeout=timeout) as resp:
                if resp.status == 304:
                    return None
                raw = await resp.read()
                if resp.status == 200:
                    return Delivery(resp.headers.get("ETag"), _json_object(raw))
                raise _refusal(resp.status, raw)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise Unreachable(f"the service at {self.url} is not reachable ({type(error).__name__})") from None


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise Unreachable("the service answered 200 without a JSON object: is --url a spacesvc?")
    return body


def _refusal(status: int, raw: bytes) -> CredentialsError:
    """The error for an answer other than 200 or 304, in the envelope's own words (never a secret)."""
    try:
        envelope = orjson.loads(raw)
    except orjson.JSONDecodeError:
        envelope = None
    said = ""
    if isinstance(envelope, dict) and isinstance(envelope.get("message"), str):
        said = f" {envelope.get('code', '')}: {envelope['message']}"
    if status == 429 or status >= 500:
        return Unreachable(f"the service cannot answer now ({status}{said})")
    if status in (401, 403):
        return Refused(f"the service refused the token ({status}{said})", retryable=False)
    return Refused(f"the service answered {status}{said}", retryable=status == 404)


# -- what is written ---------------------------------------------------------------------------


def endpoint_url(endpoint: str) -> str:
    """The endpoint as a URL (the service's may be a bare host, which means https)."""
    return endpoint if "://" in endpoint else f"https://{endpoint}"


def environment_of(body: Mapping[str, Any]) -> dict[str, str]:
    """The variables every AWS SDK and the AWS CLI read."""
    return {
        "AWS_ACCESS_KEY_ID": body["accessKey"],
        "AWS_SECRET_ACCESS_KEY": body["secretKey"],
        "AWS_REGION": body["region"],
        "AWS_ENDPOINT_URL_S3": endpoint_url(body["endpoint"]),
    }


def render(fmt: str, body: Mapping[str, Any]) -> bytes:
    if fmt in ("json", "credential-process"):
        return orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"
    if fmt == "env":
        return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in environment_of(body).items()).encode()
    lines = [
        f"[{RCLONE_REMOTE}]",
        "type = s3",
        "provider = Other",
        "env_auth = false",
        f"access_key_id = {body['accessKey']}",
        f"secret_access_key = {body['secretKey']}",
        f"region = {body['region']}",
        f"endpoint = {endpoint_url(body['endpoint'])}",
    ]
    return ("\n".join(lines) + "\n").encode()


def write_whole(path: Path, content: bytes) -> None:
    """Replace ``path`` with ``content`` at once: a reader sees the old file or the new one, whole.
    The file is created with mode 0600 (only its owner may read the secret)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# -- the command run with --exec ---------------------------------------------------------------


class Child:
    """The command of --exec: started with the credentials in its environment, restarted (SIGTERM,
    then a new start) when they change; ``exited`` is its status once it exits by itself."""

    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)
        self.process: asyncio.subprocess.Process | None = None
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._environment: dict[str, str] | None = None
        self._waiting: asyncio.Task[None] | None = None  # for the running process's exit

    async def apply(self, delivery: Delivery) -> None:
        environment = environment_of(delivery.body)
        if environment == self._environment:
            return  # another version, the same credentials: nothing to restart for
        await self.stop()
        self._environment = environment
        try:
            process = await asyncio.create_subprocess_exec(*self.command, env={**os.environ, **environment})
        except OSError as error:
            raise CredentialsError(f"cannot run {self.command[0]!r}: {error.strerror}", status=127) from None
        self.process = process
        self._waiting = asyncio.create_task(self._wait(process))

    async def _wait(self, process: asyncio.subprocess.Process) -> None:
        status = await process.wait()
        if process is self.process and not self.exited.done():  # not stopped by us
            self.exited.set_result(exit_status(status))

    async def stop(self) -> int | None:
        """SIGTERM (SIGKILL after STOP_SECONDS); its exit status, or None if none was running."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                async with asyncio.timeout(STOP_SECONDS):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        return exit_status(await process.wait())


def exit_status(returncode: int) -> int:
    """A process's exit status as a shell reports it (128 + N when killed by signal N)."""
    return returncode if returncode >= 0 else 128 - returncode


# -- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    url: str
    token: str = field(repr=False)
    environment: str | None
    format: str
    out: Path | None
    watch: bool
    command: tuple[str, ...]

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str]) -> Plan:
        if args.token is not None:
            raise CredentialsError(NO_TOKEN_ON_THE_COMMAND_LINE, status=2)
        url = args.url or environ.get("SPACESVC_URL", "").strip()
        if not url:
            raise CredentialsError("give the service's URL: --url URL or SPACESVC_URL", status=2)
        if not url.startswith(("http://", "https://")):
            raise CredentialsError(f"--url {url!r}: an http:// or https:// URL is expected", status=2)
        token_file = args.token_file or (
            Path(environ["SPACESVC_TOKEN_FILE"]) if environ.get("SPACESVC_TOKEN_FILE") else None
        )
        if token_file is None:
            raise CredentialsError("give the token's file: --token-file FILE or SPACESVC_TOKEN_FILE", status=2)
        try:
            token = token_file.read_text().strip()
        except OSError as error:
            raise CredentialsError(f"cannot read the token file {token_file}: {error.strerror}", status=2) from None
        if not token:
            raise CredentialsError(f"the token file {token_file} is empty", status=2)
        if args.exec and not args.exec_command:
            raise CredentialsError("--exec needs a command after --: --exec -- CMD [ARG …]", status=2)
        if args.exec_command and not args.exec:
            raise CredentialsError(
                f"unexpected argument {args.exec_command[0]!r} (a command goes after --exec --)", status=2
            )
        if args.watch and args.out is None:
            raise CredentialsError("--watch needs --out FILE (or use --exec)", status=2)
        if args.exec and args.out is not None and args.format == "credential-process":
            raise CredentialsError("with --exec, --out writes env, rclone or json, not credential-process", status=2)
        return cls(
            url=url,
            token=token,
            environment=args.environment,
            format=args.format,
            out=args.out,
            watch=args.watch or args.exec,
            command=tuple(args.exec_command),
        )

    @property
    def representation(self) -> str:
        """What the service is asked for: credential_process's answer, or the JSON."""
        return "credential-process" if self.format == "credential-process" and not self.command else "json"

    async def run(self) -> int:
        async with Service(self.url, self.token, self.environment, self.representation) as service:
            if not self.watch:
                delivery = await service.fetch()
                assert delivery is not None
                self.emit(delivery)
                return 0
            return await self.keep_current(service)

    def emit(self, delivery: Delivery) -> None:
        self.put(render(self.format, delivery.body))

    def put(self, content: bytes) -> None:
        if self.out is None:
            sys.stdout.buffer.write(content)
            sys.stdout.flush()
        else:
            try:
                write_whole(self.out, content)
            except OSError as error:
                raise CredentialsError(f"cannot write {self.out}: {error.strerror}") from None

    async def keep_current(self, service: Service) -> int:
        """Until SIGTERM or SIGINT (exit 0, or the command's status), a refused token (exit 1),
        or, with --exec, until the command exits by itself (its status)."""
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()

        def asked_to_stop() -> None:
            if not stop.done():
                stop.set_result(None)

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, asked_to_stop)
        child = Child(self.command) if self.command else None
        actions: list[Callable[[Delivery], Awaitable[None]]] = []
        if self.out is not None:
            written: list[bytes] = []

            async def write(delivery: Delivery) -> None:
                content = render(self.format, delivery.body)
                if written != [content]:  # a new version whose rendering is the same leaves the file alone
                    self.put(content)
                    written[:] = [content]

            actions.append(write)
        if child is not None:
            actions.append(child.apply)
        watcher = asyncio.create_task(watch(service, actions))
        ends: set[asyncio.Future[Any]] = {watcher, stop, *([child.exited] if child else [])}
        done, _ = await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        if watcher not in done:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if child is not None and child.exited.done():
            return child.exited.result()
        stopped = await child.stop() if child is not None else None
        if watcher in done:
            watcher.result()  # it ends only with a refusal: raises it
        return 0 if stopped is None else stopped


async def watch(service: Service, actions: Sequence[Callable[[Delivery], Awaitable[None]]]) -> None:
    """Apply every new delivery; the last one stays in force while the service cannot be reached
    (retrying with back-off, one line on stderr per outage). Ends only on a refused token, or
    a file that cannot be written or a command that cannot be run."""
    current: Delivery | None = None
    failures = 0
    while True:
        refresh_in = current.refresh_in() if current is not None else None
        # at most one unconditional fetch a second, even for an Expiration already past by this
        # machine's clock (every fetch is a delivery in the audit trail)
        due = refresh_in is not None and refresh_in <= 0 and current is not None and current.age() >= 1
        wait = WATCH_SECONDS if refresh_in is None else max(1, min(WATCH_SECONDS, int(refresh_in)))
        try:
            fresh = await service.fetch(None if due else current, wait)
        except (Unreachable, Refused) as error:
            if isinstance(error, Refused) and not error.retryable:
                raise
            if failures == 0:
                kept = "keeping the last credentials" if current is not None else "no credentials yet"
                print(f"spacesvc credentials: {error}; {kept}, retrying", file=sys.stderr, flush=True)
            await asyncio.sleep(BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)])
            failures += 1
            continue
        if failures:
            print("spacesvc credentials: the service answers again", file=sys.stderr, flush=True)
            failures = 0
        if fresh is None:
            continue
        if current is None or fresh.body != current.body:
            for action in actions:
                await action(fresh)
        current = fresh
