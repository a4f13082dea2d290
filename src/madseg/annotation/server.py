"""Start and stop a real Label Studio server, headless, offline and without prompts (on 127.0.0.1 unless told).

The server (label-studio 1.23.2) lives in its own virtualenv; this module only runs its executable. A fresh
database needs ~25 s of migrations, so the first start migrates a *template* data folder once and every later
start copies it (~3 s to a healthy server). The admin user, its password and its legacy API token are created
by the server itself from environment variables on the template's first start, and kept in the template's
``madseg_admin.json`` so copies of the template share them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

TEMPLATE_READY = ".madseg_template_ready"
ADMIN_FILE = "madseg_admin.json"  # inside a data folder: the admin's email, password and token
# Django's line; the host is an IPv4 address, a [bracketed] IPv6 one or a name
_ADDRESS = re.compile(r"Starting development server at http://(\[[0-9a-fA-F:.]+\]|[^\s/:]+):(\d+)")
_WILDCARD = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}  # bound to every interface: reach it locally here
# what an address's user types for an e-mail: one @, no spaces, a dot in the domain (no full RFC 5322)
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


class LabelStudioServerError(RuntimeError):
    """The server could not be started or did not become healthy."""


@dataclass
class ServerHandle:
    """A running server started by :func:`start_server`; stop it with :func:`stop_server` (or ``with``)."""

    url: str  # where this machine reaches it (127.0.0.1 when it listens on every interface)
    token: str
    username: str
    password: str
    data_dir: Path
    document_root: Path
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        stop_server(self)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the server still moves to port+1 if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) only accepts connections from this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it resolves to an interface others may reach
        return False


def exposure_warning(host: str) -> str:
    """What listening on the non-loopback ``host`` exposes, and how to keep it to the team."""
    return (
        f"Label Studio listens on {host}, not only on 127.0.0.1: anyone who can reach this port sees its sign-in "
        "page. Accounts are made only by invitation (sign-up without the invite link is disabled), but traffic "
        "is plain HTTP, passwords and API tokens included: keep the port behind a firewall or a VPN, or serve it "
        "through a TLS reverse proxy (e.g. nginx or Caddy) and give annotators the https address"
    )


def read_users(text: str, source: str) -> list[str]:
    """The e-mail addresses of a users file: one per line; blank lines and ``#`` comments (whole-line or
    trailing) skipped; duplicates dropped, in order.

    Raises:
        ConfigError: a line is not one e-mail address; the message names ``source`` and the line number.
    """
    from madseg.config import ConfigError

    users: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        email = line.split("#", 1)[0].strip()
        if not email:
            continue
        if not _EMAIL.fullmatch(email):
            raise ConfigError(
                f"{source}, line {number}: {email!r} is not an e-mail address — write one address per line "
                "(e.g. ana@example.org); # starts a comment"
            )
        if email not in users:
            users.append(email)
    return users


def team_users(users: Sequence[str], users_file: str | Path | None) -> list[str]:
    """``annotation.labelstudio.users`` followed by the addresses of ``users_file`` (if set), without repeats.

    Raises:
        ConfigError: an entry is no e-mail address (naming it), or the file is missing.
    """
    from madseg.config import ConfigError

    listed = read_users("\n".join(users), "annotation.labelstudio.users")
    if not users_file:
        return listed
    path = Path(users_file)
    if not path.is_file():
        raise ConfigError(
            f"annotation.labelstudio.users_file: {path} does not exist — create it (one e-mail a line) or "
            "remove the key"
        )
    extra = read_users(path.read_text(), f"annotation.labelstudio.users_file {path}")
    return listed + [u for u in extra if u not in listed]


def shared_template_dir(executable: str | Path) -> Path:
    """A migrated template under the temp dir, one per server install (tests and benchmarks share it)."""
    key = hashlib.sha256(str(Path(executable).resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "madseg-labelstudio" / f"template-{key}"


def server_env(data_dir: Path, document_root: Path, admin: dict[str, str]) -> dict[str, str]:
    """The environment that makes Label Studio headless, offline and prompt-free (see docs/notes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_")}
    # the settings also read these unprefixed names: never let the caller's shell leak into the server
    for name in ("HOST", "PORT", "USERNAME", "PASSWORD", "DEBUG"):
        env.pop(name, None)
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_USERNAME": admin["username"],
            "LABEL_STUDIO_PASSWORD": admin["password"],
            "LABEL_STUDIO_USER_TOKEN": admin["token"],
            # only honoured when the organization is created (a fresh DB), hence set on every start
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",  # else it calls PyPI
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "LABEL_STUDIO_HOST": "",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _admin(data_dir: Path) -> dict[str, str]:
    path = data_dir / ADMIN_FILE
    if path.exists():
        return json.loads(path.read_text())
    admin = {
        "username": "admin@madseg.local",
        "password": secrets.token_urlsafe(16),
        "token": secrets.token_hex(20),  # the legacy token format: 40 hex characters
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(admin, indent=2) + "\n")
    path.chmod(0o600)
    return admin


def start_server(
    executable: str | Path,
    data_dir: str | Path,
    *,
    document_root: str | Path,
    port: int | None = None,
    host: str = "127.0.0.1",
    template_dir: str | Path | None = None,
    timeout_s: float = 120.0,
) -> ServerHandle:
    """Start ``label-studio start`` in its own process group and wait until ``GET /health`` answers.

    Args:
        executable: the ``label-studio`` script of the server's virtualenv.
        data_dir: its data folder (SQLite DB, media, secret key, the admin file). Created if missing: from a
            copy of ``template_dir`` when given (migrating the template first if it is empty).
        document_root: the folder whose files tasks may reference as ``/data/local-files/?d=<relative path>``.
        port: the port to ask for (a free one if None). The server silently moves to the next one when it is
            taken, so the real address is read from its log.
        host: the address it listens on. Only loopback keeps it private to this machine; any other
            (0.0.0.0: every interface) lets whoever reaches the port see the sign-in page, and is logged as a
            warning (:func:`exposure_warning`).
    Raises:
        FileNotFoundError: the executable is missing.
        LabelStudioServerError: it exited or did not become healthy within ``timeout_s``.
    """
    executable = Path(executable)
    if not executable.exists():
        raise FileNotFoundError(
            f"Label Studio server executable {executable} not found; install it with "
            "`make .venv-labelstudio/.installed` (label-studio==1.23.2)"
        )
    data_dir = Path(data_dir).resolve()
    if template_dir is not None and not (data_dir / "label_studio.sqlite3").exists():
        _copy_template(executable, Path(template_dir).resolve(), data_dir, document_root, timeout_s)
    if not is_loopback(host):
        log.warning(exposure_warning(host))
    handle = _launch(executable, data_dir, Path(document_root).resolve(), port or free_port(), host)
    try:
        _wait_healthy(handle, timeout_s)
    except BaseException:
        stop_server(handle)
        raise
    log.info("Label Studio is up at %s (data %s)", handle.url, data_dir)
    return handle


def _copy_template(executable: Path, template: Path, data_dir: Path, document_root, timeout_s: float) -> None:
    """Fill ``data_dir`` from a migrated template (migrating it first, once: ~30 s)."""
    template.parent.mkdir(parents=True, exist_ok=True)
    # a lock beside the template: two test sessions must not migrate (or copy) it at the same time
    with open(template.parent / f".{template.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (template / TEMPLATE_READY).exists():  # absent too if a migration was interrupted
            log.info("migrating a fresh Label Studio template in %s (~30 s, once)", template)
            shutil.rmtree(template, ignore_errors=True)
            stop_server(start_server(executable, template, document_root=document_root, timeout_s=timeout_s))
            (template / TEMPLATE_READY).touch()
        if data_dir.exists():
            shutil.rmtree(data_dir)
        shutil.copytree(template, data_dir, ignore=shutil.ignore_patterns("server.log"))


def _launch(executable: Path, data_dir: Path, document_root: Path, port: int, host: str) -> ServerHandle:
    """``label-studio start`` in its own process group, its log in ``data_dir``/server.log (url not known yet)."""
    admin = _admin(data_dir)
    log_path = data_dir / "server.log"
    cmd = [str(executable), "start", "--no-browser", "--internal-host", host, "--port", str(port)]
    with log_path.open("wb") as logf:
        process = subprocess.Popen(
            cmd,
            env=server_env(data_dir, document_root, admin),
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so stop_server ends the server and its children
            cwd=data_dir,
        )
    return ServerHandle(
        url="",
        token=admin["token"],
        username=admin["username"],
        password=admin["password"],
        data_dir=data_dir,
        document_root=document_root,
        log_path=log_path,
        process=process,
    )


def _wait_healthy(handle: ServerHandle, timeout_s: float) -> None:
    """Read the real address from the log (the server moves to the next port when its own is taken), then wait
    for ``GET /health``; LabelStudioServerError if it exits or does not answer in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if handle.process.poll() is not None:
            raise LabelStudioServerError(
                f"Label Studio exited with code {handle.process.returncode}; last log lines:\n{_tail(handle.log_path)}"
            )
        if not handle.url:
            match = _ADDRESS.search(handle.log_path.read_text(errors="replace"))
            if match:
                handle.url = f"http://{_WILDCARD.get(match.group(1), match.group(1))}:{match.group(2)}"
        if handle.url and _healthy(handle.url):
            return
        time.sleep(0.3)
    raise LabelStudioServerError(
        f"Label Studio did not answer /health within {timeout_s:.0f} s; last log lines:\n{_tail(handle.log_path)}"
    )


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _tail(path: Path, n: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def stop_server(handle: ServerHandle, timeout_s: float = 15.0) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it has not exited within ``timeout_s``."""
    process = handle.process
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def write_env_file(path: str | Path, url: str, token: str) -> None:
    """Write the URL and token the pipeline reads (a git-ignored ``.env``), readable by the owner only."""
    path = Path(path)
    path.write_text(f"LABEL_STUDIO_URL={url}\nLABEL_STUDIO_API_KEY={token}\n")
    path.chmod(0o600)


def add_annotators(url: str, token: str, emails: Sequence[str]) -> str:
    """Create an account for each email that has none (signup is disabled); returns the organisation's invite
    link, through which people set their password (or a hint where to find it in the web interface)."""
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=url, api_key=token)
    existing = {str(u.email) for u in client.users.list()}
    for email in emails:
        if email not in existing:
            client.users.create(username=email.split("@")[0], email=email)
            log.info("created the Label Studio account of %s", email)
    try:
        answer = httpx.get(f"{url}/api/invite", headers={"Authorization": f"Token {token}"}, timeout=10.0)
        answer.raise_for_status()
        return url + str(answer.json()["invite_url"])
    except (httpx.HTTPError, KeyError, ValueError):
        return f"{url} -> Organization -> Add People"


def serve(executable: str | Path, params_path: str | Path = "params.yaml", host: str = "127.0.0.1") -> None:
    """`madseg labelstudio-server`: run a server for a team in the foreground until Ctrl-C.

    Its database lives in ``annotation.labelstudio.data_dir``/data and survives restarts (only a missing one
    is created, from a migrated template beside it); URL and token go to ``env_file`` for the pipeline. It
    listens on ``host`` (0.0.0.0 for annotators on other machines: see :func:`exposure_warning`) and creates an
    account for each address of ``users`` and ``users_file``.
    """
    from madseg.config import load_params

    ls = load_params(params_path).annotation.labelstudio
    users = team_users(ls.users, ls.users_file)  # a bad address stops here, before the server starts
    root = Path(ls.data_dir)
    handle = start_server(
        executable,
        root / "data",
        document_root=ls.document_root,
        port=ls.port,
        host=host,
        template_dir=root / "template",
    )
    write_env_file(ls.env_file, handle.url, handle.token)
    invite = add_annotators(handle.url, handle.token, users)
    if not is_loopback(host):
        port = handle.url.rsplit(":", 1)[1]
        print(
            f"  remote annotators open http://<this machine's name or address>:{port} (listening on {host})",
            flush=True,
        )
    print(
        f"  annotators: {', '.join(users) or 'none listed (annotation.labelstudio.users or users_file)'}; "
        f"they set their password through the invite link {invite}",
        flush=True,
    )
    print(
        f"Label Studio is running at {handle.url}\n"
        f"  log in as {handle.username}; password and API token: {handle.data_dir / ADMIN_FILE}\n"
        f"  the pipeline reads LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY from {Path(ls.env_file).resolve()}\n"
        f"  set annotation.backend: labelstudio in params.yaml, then `dvc repro`; Ctrl-C stops the server",
        flush=True,
    )
    # SIGTERM (e.g. from a process manager) ends the foreground server as cleanly as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        handle.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_server(handle)
