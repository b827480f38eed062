#!/usr/bin/env python3
"""Compatibility test: the published `armorapi` client against an armor server.

`armorapi` (PyPI, gingebot/armorapi) is a third-party Python client of the
vendor's API. It logs in with a password (FH-AUTH) and reads GET /me. This
test runs it exactly as published (pinned version, file hash checked) against
the server at ARMOR_TEST_URL and exits non-zero, with a reason, on failure.

    ARMOR_TEST_URL=http://127.0.0.1:PORT ARMOR_TEST_EMAIL=... \
    ARMOR_TEST_PASSWORD=... python3 tests/compat/armorapi_test.py

Environment:
    ARMOR_TEST_URL        the server, http://HOST:PORT on a loopback address
    ARMOR_TEST_EMAIL      a user with at least one account (the admin)
    ARMOR_TEST_PASSWORD   its password
    ARMOR_COMPAT_VENV     venv to install armorapi into (default: a cache dir)
    ARMOR_TEST_TIMEOUT    overall bound in seconds for the checks (default 120)
    ARMOR_TEST_REISSUE    "require" (default): POST /auth/token/reissue must
                          work, and any error there (a 404 or 405 too) fails;
                          "skip": not tried (for a server without the route)

How the client is pointed at the server. armorapi has no base-URL setting:
`https://api.armor.com/...` is written into each login step and into
`make_request`'s host whitelist, and the login runs inside the constructor,
so nothing can be set on the object first. The only configuration it honours
is that of `requests` itself, which reads the standard proxy and CA-bundle
variables from the environment. So this test starts a small CONNECT proxy on
127.0.0.1 that accepts tunnels to api.armor.com:443 only, terminates TLS there
with a throwaway certificate from a throwaway CA (made with `openssl`), and
relays the plaintext HTTP to ARMOR_TEST_URL; the client runs with
HTTPS_PROXY pointing at that proxy and REQUESTS_CA_BUNDLE at that CA. The
client's code, URLs, headers and bodies are untouched: the server sees what
it would see from the client on the vendor's host (including
`Host: api.armor.com`). Nothing leaves the machine: the proxy refuses every
other tunnel target and dials only the loopback server.
"""

from __future__ import annotations

import hashlib
import importlib.util
import ipaddress
import logging
import os
import secrets
import select
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ARMORAPI_VERSION = "0.0.3"
# sha256 of armorapi/__init__.py in armorapi-0.0.3-py3-none-any.whl as
# published on PyPI (wheel sha256 088aa23f08f3f715575c50db1e4a8ccf01437a6a7da12fbe3ddbafdda4bf5b71).
ARMORAPI_INIT_SHA256 = "b35212213c3905611326dc5c330eb2f728e54de7ae887d1117fa529661febbe1"
VENDOR_HOST = "api.armor.com"
VENDOR = f"https://{VENDOR_HOST}"
IN_VENV_MARK = "ARMOR_COMPAT_IN_VENV"


class CompatFailure(Exception):
    """A check failed; the message says which and why."""


def die(msg: str, code: int = 1) -> None:
    print(f"armorapi: FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def note(msg: str) -> None:
    print(f"armorapi: {msg}", flush=True)


# --------------------------------------------------------------------------
# Environment and venv bootstrap
# --------------------------------------------------------------------------

def read_env() -> tuple[str, str, str]:
    missing = [n for n in ("ARMOR_TEST_URL", "ARMOR_TEST_EMAIL", "ARMOR_TEST_PASSWORD")
               if not os.environ.get(n)]
    if missing:
        die("set " + ", ".join(missing) + " (see the docstring of this file)", 2)
    return (os.environ["ARMOR_TEST_URL"], os.environ["ARMOR_TEST_EMAIL"],
            os.environ["ARMOR_TEST_PASSWORD"])


def upstream_of(url: str) -> tuple[str, int]:
    """The server's (host, port), refusing anything but http on loopback."""
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        die(f"ARMOR_TEST_URL must be http://HOST:PORT, got {url!r}", 2)
    if u.path not in ("", "/") or u.query:
        die(f"ARMOR_TEST_URL must have no path or query (the client's paths are fixed), got {url!r}", 2)
    port = u.port or 80
    try:
        addr = ipaddress.ip_address(socket.getaddrinfo(u.hostname, port)[0][4][0])
    except (OSError, ValueError) as e:
        die(f"cannot resolve {u.hostname!r}: {e}", 2)
    if not addr.is_loopback:
        die(f"ARMOR_TEST_URL must be on a loopback address, {u.hostname} is {addr}", 2)
    return str(addr), port


def default_venv() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "armor-compat" / f"armorapi-{ARMORAPI_VERSION}"


def armorapi_ready() -> bool:
    """True when this interpreter has the pinned armorapi (and is a venv)."""
    if sys.prefix == sys.base_prefix:
        return False
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("armorapi") == ARMORAPI_VERSION
    except PackageNotFoundError:
        return False


def ensure_venv_and_reexec() -> None:
    """Unless already there, install armorapi into a venv and rerun in it."""
    if armorapi_ready():
        return
    if os.environ.get(IN_VENV_MARK):
        die(f"running in {sys.prefix} but armorapi=={ARMORAPI_VERSION} is not importable there")
    venv = Path(os.environ.get("ARMOR_COMPAT_VENV") or default_venv())
    py = venv / "bin" / "python"
    try:
        if not py.exists():
            note(f"creating venv {venv}")
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        probe = subprocess.run(
            [str(py), "-c", "import importlib.metadata as m; print(m.version('armorapi'))"],
            capture_output=True, text=True, timeout=60)
        if probe.returncode != 0 or probe.stdout.strip() != ARMORAPI_VERSION:
            note(f"installing armorapi=={ARMORAPI_VERSION} from PyPI into {venv}")
            subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--timeout", "60",
                            "--disable-pip-version-check", f"armorapi=={ARMORAPI_VERSION}"],
                           check=True, timeout=900)
    except subprocess.TimeoutExpired as e:
        die(f"venv/pip step timed out: {e}")
    except subprocess.CalledProcessError as e:
        die(f"venv/pip step failed (exit {e.returncode}): {' '.join(map(str, e.cmd))}")
    env = dict(os.environ, **{IN_VENV_MARK: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(str(py), [str(py), os.path.abspath(__file__), *sys.argv[1:]], env)


def check_published_armorapi() -> None:
    """The installed armorapi must be byte-identical to the published file."""
    spec = importlib.util.find_spec("armorapi")
    if spec is None or not spec.origin:
        die("armorapi is not importable")
    digest = hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()
    if digest != ARMORAPI_INIT_SHA256:
        die(f"{spec.origin} is not the published armorapi {ARMORAPI_VERSION} "
            f"(sha256 {digest}, expected {ARMORAPI_INIT_SHA256})")


# --------------------------------------------------------------------------
# Throwaway CA + certificate for api.armor.com (openssl CLI)
# --------------------------------------------------------------------------

def make_certs(d: Path) -> tuple[Path, Path, Path]:
    """Returns (ca.pem, leaf.pem, leaf.key) in d."""
    (d / "ca.cnf").write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\n"
        "[dn]\nCN = armor compat throwaway CA\n"
        "[v3_ca]\nbasicConstraints = critical,CA:TRUE\n"
        "keyUsage = critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n")
    (d / "leaf.cnf").write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\n"
        f"[dn]\nCN = {VENDOR_HOST}\n")
    (d / "leaf.ext").write_text(
        "[v3_leaf]\nbasicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        f"subjectAltName = DNS:{VENDOR_HOST}\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid,issuer\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        ["openssl", "req", "-x509", "-config", "ca.cnf", "-extensions", "v3_ca", *ec,
         "-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
        ["openssl", "req", "-new", "-config", "leaf.cnf", *ec,
         "-keyout", "leaf.key", "-out", "leaf.csr"],
        ["openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-set_serial", "0x" + secrets.token_hex(8), "-days", "2",
         "-extfile", "leaf.ext", "-extensions", "v3_leaf", "-out", "leaf.pem"],
    ]
    for cmd in steps:
        try:
            r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            die("the openssl command is needed to make the throwaway certificate")
        except subprocess.TimeoutExpired:
            die(f"timed out: {' '.join(cmd)}")
        if r.returncode != 0:
            die(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return d / "ca.pem", d / "leaf.pem", d / "leaf.key"


# --------------------------------------------------------------------------
# Loopback CONNECT proxy terminating TLS for api.armor.com
# --------------------------------------------------------------------------

class InterceptProxy:
    """Accepts `CONNECT api.armor.com:443` on 127.0.0.1, terminates TLS, and
    relays the bytes to the upstream server over plain TCP. Anything else is
    refused; the upstream is the only address it ever dials."""

    IO_TIMEOUT = 10.0     # one read/write, one handshake, one upstream connect
    IDLE_TIMEOUT = 30.0   # an idle keep-alive tunnel is closed after this
    CLOSE_GRACE = 0.02    # how long to look for the server's close after a response
    COALESCE = 0.005      # how long to wait for the rest of a client's request

    def __init__(self, upstream: tuple[str, int], certfile: Path, keyfile: Path):
        self.upstream = upstream
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(str(certfile), str(keyfile))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.refused: list[str] = []
        self.errors: list[str] = []
        self.tunnels = 0
        self._stop = False
        threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True).start()

    def close(self) -> None:
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_head(conn: socket.socket) -> bytes:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(4096)
            if not chunk:
                break
            buf += chunk
            if len(buf) > 16384:
                break
        return buf

    def _handle(self, conn: socket.socket) -> None:
        up = tls = None
        try:
            conn.settimeout(self.IO_TIMEOUT)
            head = self._read_head(conn)
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split()
            target = parts[1] if len(parts) == 3 and parts[0] == "CONNECT" else None
            if target is None or target.lower() != f"{VENDOR_HOST}:443":
                self.refused.append(line[:200])
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            tls = self.ctx.wrap_socket(conn, server_side=True)
            up = socket.create_connection(self.upstream, timeout=self.IO_TIMEOUT)
            self.tunnels += 1
            self._pump(tls, up)
        except (OSError, ssl.SSLError) as e:
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            for s in (up, tls, conn):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def _pump(self, tls: ssl.SSLSocket, up: socket.socket) -> None:
        """Relay both ways from one thread (an SSL object must not be read
        and written from two threads at once). The extra hop must not change
        what the client sees, so the server's bytes are always relayed
        before more of the client's are written (a server that answers early
        and closes would otherwise be sent data after its close, answer with
        a reset, and the response waiting in the proxy would be lost), and a
        close by the server is passed on right behind its last response."""
        while not self._stop:
            if tls.pending():
                ready = [tls]
            else:
                ready, _, _ = select.select([tls, up], [], [], self.IDLE_TIMEOUT)
                if not ready:
                    return
            if up in ready:
                if not self._relay_from_upstream(tls, up):
                    return
                continue
            try:
                data = tls.recv(65536)
            except ssl.SSLWantReadError:
                continue
            if not data:
                return
            # The client writes a request's head and body back to back; on a
            # direct connection they reach the server together. Send them
            # together too, not one TLS record at a time.
            while len(data) < (1 << 20):
                if not tls.pending() and not select.select([tls], [], [], self.COALESCE)[0]:
                    break
                try:
                    chunk = tls.recv(65536)
                except ssl.SSLWantReadError:
                    continue
                if not chunk:
                    break
                data += chunk
            try:
                up.sendall(data)
            except OSError:
                # The server is gone; hand on whatever it answered first.
                self._relay_from_upstream(tls, up)
                return

    def _relay_from_upstream(self, tls: ssl.SSLSocket, up: socket.socket) -> bool:
        """Relays what the server sent; False once it has closed."""
        try:
            data = up.recv(65536)
        except OSError:
            return False
        if not data:
            return False
        eof = False
        while True:
            more, _, _ = select.select([up], [], [], self.CLOSE_GRACE)
            if not more:
                break
            try:
                chunk = up.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                eof = True
                break
            data += chunk
        tls.sendall(data)
        return not eof


# --------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------

class WireLog(logging.Handler):
    """Keeps urllib3's one-line request log ("POST /auth/authorize" 200) so a
    failure can show what went over the wire. Bodies and headers (tokens,
    password) are never logged by urllib3 at this level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if '"' in msg and "HTTP/1.1" in msg:
            self.lines.append(msg)


def http_status(exc: BaseException) -> int | None:
    resp = getattr(exc, "response", None)
    return getattr(resp, "status_code", None)


def run_checks(email: str, password: str, proxy: InterceptProxy, wire: WireLog) -> None:
    import requests
    from armorapi import ArmorApi

    def step(what: str, fn):
        try:
            return fn()
        except CompatFailure:
            raise
        except Exception as e:  # the client raises many kinds; report them all alike
            raise CompatFailure(f"{what}: {type(e).__name__}: {e}") from e

    # 1. Login exactly as a user would: authorize -> token -> GET /me (with a
    #    JSON body "{}"), then X-Account-Context from accounts[0].id.
    aa = step("ArmorApi(username, password) [POST /auth/authorize {userName,password}, "
              "POST /auth/token, GET /me]", lambda: ArmorApi(email, password))
    auth = aa.session.headers.get("Authorization", "")
    if not auth.startswith("FH-AUTH ") or auth in ("FH-AUTH ", "FH-AUTH None"):
        raise CompatFailure(f"after login the client holds no access token (Authorization {auth[:12]!r}...):"
                            " /auth/token must answer with a non-empty \"access_token\"")
    ctx = aa.session.headers.get("X-Account-Context")
    if not ctx:
        raise CompatFailure("after login the client set no X-Account-Context: /me accounts[0].id was falsy")
    note(f"login ok, X-Account-Context {ctx}")

    # 2. GET /me again through the client's public make_request; compare.
    resp = step("make_request GET /me", lambda: aa.make_request(f"{VENDOR}/me"))
    if resp is None:
        raise CompatFailure("GET /me answered 401 with a fresh token (the client re-logged in and returned None)")
    me = step("GET /me JSON", resp.json)
    accounts = me.get("accounts") if isinstance(me, dict) else None
    if not isinstance(accounts, list) or not accounts or not isinstance(accounts[0], dict):
        raise CompatFailure(f"GET /me: \"accounts\" must be a non-empty list of objects, got {accounts!r:.200}")
    first = accounts[0].get("id")
    if not isinstance(first, int) or isinstance(first, bool):
        raise CompatFailure(f"GET /me: accounts[0].id must be a JSON integer (armorapi compares it with "
                            f"int(accountid)), got {first!r}")
    if str(first) != ctx:
        raise CompatFailure(f"X-Account-Context {ctx!r} is not accounts[0].id {first!r}")

    # 3. The accountid= constructor path: int(accountid) must be in the ids.
    step(f"ArmorApi(..., accountid='{first}')", lambda: ArmorApi(email, password, accountid=str(first)))
    note(f"login with accountid={first} ok")

    # 4. Token reissue: POST /auth/token/reissue {"token"} with the FH-AUTH header.
    mode = os.environ.get("ARMOR_TEST_REISSUE", "require")
    if mode not in ("require", "skip"):
        raise CompatFailure(f"ARMOR_TEST_REISSUE={mode!r}: expected 'require' or 'skip'")
    if mode == "require":
        old = aa.session.headers.get("Authorization")
        try:
            aa.v1_reissue_authorisation_token()
        except requests.HTTPError as e:
            raise CompatFailure(f"POST /auth/token/reissue: HTTP {http_status(e)}: {e}") from e
        except Exception as e:
            raise CompatFailure(f"POST /auth/token/reissue: {type(e).__name__}: {e}") from e
        resp = step("GET /me with the reissued token", lambda: aa.make_request(f"{VENDOR}/me"))
        new = aa.session.headers.get("Authorization")
        if resp is None or new in (old, "FH-AUTH None"):
            raise CompatFailure("the reissued access_token was missing or did not work for GET /me")
        note("token reissue ok")

    # 5. Re-login after the token has expired. The client answers any 401 by
    #    logging in again from scratch, with the stale `Authorization` and
    #    `X-Account-Context` headers still on its session, and then hands
    #    None to the caller. An expired token is simulated through the
    #    client's documented public `session` member (README: "All requests
    #    session methods and members are available for use").
    aa.session.headers["Authorization"] = "FH-AUTH " + "0" * 32
    try:
        resp = aa.make_request(f"{VENDOR}/me")
    except requests.HTTPError as e:
        raise CompatFailure(
            f"re-login after an expired token: HTTP {http_status(e)} from {e.request.url if e.request else '?'}"
            " (the client logs in again with the stale `Authorization: FH-AUTH ...` and"
            " `X-Account-Context` headers still set: /auth/authorize and /auth/token must"
            " ignore both)") from e
    except Exception as e:
        raise CompatFailure(f"re-login after an expired token: {type(e).__name__}: {e}") from e
    if resp is not None:
        raise CompatFailure(f"GET /me with an invalid FH-AUTH token answered {resp.status_code}, expected 401")
    resp = step("GET /me after the re-login", lambda: aa.make_request(f"{VENDOR}/me"))
    if resp is None or resp.status_code != 200:
        raise CompatFailure("GET /me after the re-login did not answer 200")
    note("re-login after an expired token ok")

    # 6. A wrong password must be refused with a 4xx (the client raises).
    #    retries401=1 bounds the client's retry-on-401 loop to 2 attempts.
    client_log = logging.getLogger("armorapi")
    client_log.disabled = True  # its 401 warnings are expected here
    try:
        ArmorApi(email, password + "-wrong", retries401=1)
    except requests.HTTPError as e:
        code = http_status(e)
        if code is None or not 400 <= code < 500:
            raise CompatFailure(f"wrong password: expected a 4xx, got HTTP {code}") from e
        note(f"wrong password refused with HTTP {code}")
    except Exception as e:
        raise CompatFailure(f"wrong password: expected an HTTP 4xx, got {type(e).__name__}: {e}") from e
    else:
        raise CompatFailure("a wrong password was accepted")
    finally:
        client_log.disabled = False

    if proxy.refused:
        raise CompatFailure(f"the client tried to reach something other than {VENDOR_HOST}: {proxy.refused}")


def main() -> None:
    url, email, password = read_env()
    upstream = upstream_of(url)
    ensure_venv_and_reexec()
    check_published_armorapi()

    budget = int(os.environ.get("ARMOR_TEST_TIMEOUT", "120"))
    with tempfile.TemporaryDirectory(prefix="armorapi-compat-") as tmp:
        ca, leaf, key = make_certs(Path(tmp))
        proxy = InterceptProxy(upstream, leaf, key)
        proxy_url = f"http://127.0.0.1:{proxy.port}"
        # requests reads these per request (Session.trust_env): route
        # https://api.armor.com through the loopback proxy and trust only the
        # throwaway CA. Nothing else is configured.
        for k in ("HTTPS_PROXY", "https_proxy"):
            os.environ[k] = proxy_url
        for k in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "CURL_CA_BUNDLE"):
            os.environ.pop(k, None)
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = ""
        os.environ["REQUESTS_CA_BUNDLE"] = str(ca)

        wire = WireLog()
        ul = logging.getLogger("urllib3.connectionpool")
        ul.addHandler(wire)
        ul.setLevel(logging.DEBUG)
        ul.propagate = False
        # armorapi sets its own logger to DEBUG on import and logs tokens at
        # that level: filter on the handler, show warnings and errors only.
        al = logging.getLogger("armorapi")
        al.propagate = False
        errors = logging.StreamHandler(sys.stderr)
        errors.setLevel(logging.WARNING)
        errors.setFormatter(logging.Formatter("armorapi client log: %(levelname)s %(message)s"))
        al.addHandler(errors)

        def on_alarm(signum, frame):
            raise CompatFailure(f"checks did not finish within {budget}s (ARMOR_TEST_TIMEOUT)")

        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(budget)
        note(f"armorapi {ARMORAPI_VERSION} (published file) -> {VENDOR} via {proxy_url} -> {url}")
        try:
            run_checks(email, password, proxy, wire)
        except CompatFailure as e:
            signal.alarm(0)
            print(f"armorapi: FAIL: {e}", file=sys.stderr)
            if wire.lines:
                print("armorapi: requests seen (urllib3):", file=sys.stderr)
                for line in wire.lines[-20:]:
                    print(f"  {line}", file=sys.stderr)
            if proxy.errors:
                print(f"armorapi: proxy errors: {proxy.errors[-5:]}", file=sys.stderr)
            sys.stderr.flush()
            proxy.close()
            sys.exit(1)
        signal.alarm(0)
        proxy.close()
    print("armorapi: ok", flush=True)


if __name__ == "__main__":
    main()
