"""Hugging Face Hub stand-in: a local HTTP server speaking the endpoints the real huggingface_hub client calls."""

from __future__ import annotations

import hashlib
import json
import math
import mimetypes
import pathlib
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest

DEFAULT_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".gguf", ".pkl", ".h5", ".msgpack")
CHUNK_SIZE = 64 * 1024
# Fixed epoch plus one second per commit keeps dates deterministic and strictly ordered.
EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)


@dataclass
class Fault:
    """One injected failure on a file download (GET resolve), or a slow answer to its metadata request (HEAD)."""

    kind: Literal["drop", "stall", "corrupt", "status", "delay"]
    after_bytes: int = 0  # drop/stall: bytes sent before the fault; corrupt: file offset of the flipped byte
    seconds: float = 30.0  # stall: how long the server stops sending, keeping the socket open; delay: before answering
    status: int = 500  # status: HTTP status answered instead of the file
    times: int = 1  # requests it hits before it disarms; 0 = forever
    method: Literal["GET", "HEAD"] = "GET"  # the request it hits


@dataclass(frozen=True)
class _Blob:
    """File content with the hashes the Hub exposes for it."""

    data: bytes
    git_oid: str  # git blob sha1 of what git stores: the content, or the LFS pointer for LFS files
    sha256: str
    lfs: bool
    pointer_size: int

    @classmethod
    def of(cls, data: bytes, lfs: bool) -> _Blob:
        """Hash `data` the way git and git-lfs do."""
        sha256 = hashlib.sha256(data).hexdigest()
        stored = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
        stored = stored if lfs else data
        git_oid = hashlib.sha1(b"blob %d\0" % len(stored) + stored).hexdigest()
        return cls(data, git_oid, sha256, lfs, len(stored) if lfs else 0)

    @property
    def etag(self) -> str:
        """ETag the Hub sends on resolve: sha256 for LFS files, git blob sha1 otherwise."""
        return self.sha256 if self.lfs else self.git_oid

    def entry(self, path: str) -> dict[str, Any]:
        """Tree / paths-info entry for this file."""
        out: dict[str, Any] = {"type": "file", "oid": self.git_oid, "size": len(self.data), "path": path}
        if self.lfs:
            out["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": self.pointer_size}
        return out


@dataclass(frozen=True)
class _Commit:
    """An immutable snapshot of a repo's files."""

    sha: str
    files: dict[str, _Blob]
    date: datetime
    parent: _Commit | None

    def dirs(self) -> set[str]:
        """Every folder implied by the file paths."""
        return {p.rsplit("/", i)[0] for p in self.files for i in range(1, p.count("/") + 1)}

    def entry(self, path: str, expand: bool) -> dict[str, Any] | None:
        """Tree entry for a file or folder at `path`, None when absent."""
        if path in self.files:
            out = self.files[path].entry(path)
        elif path in self.dirs():
            oid = hashlib.sha1(json.dumps([path, self._subtree(path)], sort_keys=True).encode()).hexdigest()
            out = {"type": "directory", "oid": oid, "size": 0, "path": path}
        else:
            return None
        if expand:
            last = self._last_commit_touching(path)
            out["lastCommit"] = {"id": last.sha, "title": f"Update {path}", "date": _iso(last.date)}
        return out

    def listing(self, folder: str, recursive: bool, expand: bool) -> list[dict[str, Any]]:
        """Entries below `folder` ("" = root): direct children, or everything when recursive."""
        prefix = f"{folder}/" if folder else ""
        below = [p for p in sorted(self.dirs()) + sorted(self.files) if p.startswith(prefix)]
        chosen = below if recursive else [p for p in below if "/" not in p[len(prefix):]]
        return [e for p in chosen if (e := self.entry(p, expand)) is not None]

    def _subtree(self, path: str) -> dict[str, str]:
        """Blob ids of everything at or under `path`: equal subtrees mean the path was not touched."""
        return {p: b.git_oid for p, b in self.files.items() if p == path or p.startswith(f"{path}/")}

    def _last_commit_touching(self, path: str) -> _Commit:
        """Oldest ancestor with the same content at `path`, i.e. the commit that last changed it."""
        commit = self
        while commit.parent is not None and commit.parent._subtree(path) == self._subtree(path):
            commit = commit.parent
        return commit


@dataclass
class _Repo:
    """A model repo: listing metadata, branches and every commit ever added."""

    repo_id: str
    meta: dict[str, Any]
    created: datetime
    branches: dict[str, _Commit] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> _Commit | None:
        """Branch name or full commit sha to a commit."""
        return self.branches.get(revision) or self.commits.get(revision)

    def head(self) -> _Commit:
        """Head of the default branch, or of the newest branch for repos without "main"."""
        return self.branches.get("main") or max(self.branches.values(), key=lambda c: c.date)

    def summary(self, commit: _Commit) -> dict[str, Any]:
        """The fields /api/models lists for each model."""
        gated = self.meta["gated"]
        return {
            "_id": hashlib.sha1(self.repo_id.encode()).hexdigest()[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": self.meta["author"],
            "sha": commit.sha,
            "pipeline_tag": self.meta["pipeline_tag"],
            "library_name": self.meta["library_name"],
            "tags": list(self.meta["tags"]),
            "downloads": self.meta["downloads"],
            "likes": self.meta["likes"],
            "private": self.meta["private"],
            "gated": "auto" if gated else False,
            "disabled": False,
            "createdAt": _iso(self.created),
            "lastModified": _iso(commit.date),
        }

    def info(self, commit: _Commit, blobs: bool) -> dict[str, Any]:
        """The full /api/models/{id} document at `commit`."""
        out = self.summary(commit)
        out["siblings"] = [self._sibling(p, b, blobs) for p, b in sorted(commit.files.items())]
        out["spaces"] = []
        out["cardData"] = {k: self.meta[k] for k in ("tags", "pipeline_tag", "library_name") if self.meta[k]}
        # list() snapshots the commits in one step, so a concurrent add_repo cannot break the iteration.
        unique = {b.sha256: len(b.data) for c in list(self.commits.values()) for b in c.files.values()}
        out["usedStorage"] = sum(unique.values())
        if (params := _safetensors_parameters(commit.files)) is not None:
            out["safetensors"] = {"parameters": params, "total": sum(params.values())}
        if (config := _model_config(commit.files.get("config.json"))) is not None:
            out["config"] = config
        return out

    @staticmethod
    def _sibling(path: str, blob: _Blob, blobs: bool) -> dict[str, Any]:
        """A `siblings` item; sizes and hashes only when the client asked for blobs."""
        if not blobs:
            return {"rfilename": path}
        out: dict[str, Any] = {"rfilename": path, "size": len(blob.data), "blobId": blob.git_oid}
        if blob.lfs:
            out["lfs"] = {"sha256": blob.sha256, "size": len(blob.data), "pointerSize": blob.pointer_size}
        return out


def _iso(moment: datetime) -> str:
    """Hub-style UTC timestamp."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _safetensors_parameters(files: dict[str, _Blob]) -> dict[str, int] | None:
    """Parameter counts per dtype read from safetensors headers, None when there are no safetensors files."""
    counts: dict[str, int] = {}
    found = False
    for path, blob in files.items():
        if not path.endswith(".safetensors") or len(blob.data) < 8:
            continue
        (size,) = struct.unpack("<Q", blob.data[:8])
        try:
            header = json.loads(blob.data[8 : 8 + size])
        except ValueError:
            continue  # a fake weights file: the Hub shows no safetensors info for it either
        found = True
        for name, tensor in header.items():
            if name != "__metadata__":
                counts[tensor["dtype"]] = counts.get(tensor["dtype"], 0) + math.prod(tensor["shape"])
    return counts if found else None


def _model_config(blob: _Blob | None) -> dict[str, Any] | None:
    """The `config` summary the Hub derives from config.json."""
    if blob is None:
        return None
    try:
        config = json.loads(blob.data)
    except ValueError:
        return None
    return {k: config[k] for k in ("architectures", "model_type") if k in config} if isinstance(config, dict) else None


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Inclusive byte range of a single-range `Range` header: None = whole file; ValueError if unsatisfiable."""
    if not header or not header.strip().lower().startswith("bytes=") or "," in header:
        return None
    first, _, last = header.strip()[6:].partition("-")
    if not first:  # suffix form: the last N bytes
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise ValueError(header)
    return start, end


class _Reply(Exception):
    """A finished error answer, raised from deep inside a route."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class _Handler(BaseHTTPRequestHandler):
    """Routes one connection's requests to the stand-in's state."""

    protocol_version = "HTTP/1.1"  # keep-alive like the real Hub, and Content-Length is what marks a truncated body
    server: _Server
    query: dict[str, list[str]]
    body: bytes

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without NODELAY, Nagle plus delayed ACKs add ~40 ms per request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass  # the peer (or a drop fault) already closed the socket

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the request log lives in `HubStandIn.requests`."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    @property
    def hub(self) -> HubStandIn:
        return self.server.hub

    def _dispatch(self) -> None:
        """Log the request, route it, and turn `_Reply` errors into Hub-style error answers."""
        self.hub._log(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        url = urlsplit(self.path)
        self.query = parse_qs(url.query, keep_blank_values=True)
        # Read any body up front so an early error answer leaves the kept-alive connection in sync.
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        segments = url.path.strip("/").split("/")
        try:
            if segments[:2] == ["api", "models"]:
                self._api(segments[2:])
            elif "resolve" in segments[1:] and self.command in ("GET", "HEAD"):
                at = segments.index("resolve")
                self._resolve("/".join(map(unquote, segments[:at])), segments[at + 1 :])
            else:
                raise _Reply(404, f"Sorry, we can't find the page {url.path}.")
        except _Reply as reply:
            body = json.dumps({"error": reply.message}).encode()
            headers = {"Content-Type": "application/json; charset=utf-8", "X-Error-Message": reply.message}
            if reply.code:
                headers["X-Error-Code"] = reply.code
            self._send(reply.status, {**headers, **reply.headers}, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up mid-answer (e.g. after its read timeout)

    def _param(self, name: str) -> str | None:
        """First value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else None

    def _flag(self, name: str) -> bool:
        """A boolean query parameter as httpx encodes it ("true"/"True"/"1")."""
        return (self._param(name) or "").lower() in ("1", "true")

    def _start(self, status: int, headers: dict[str, str]) -> None:
        """Send the status line and headers."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        """Answer with `body`, or just its headers for HEAD."""
        self._start(status, {**headers, "Content-Length": str(len(body))})
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload: Any, headers: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        self._send(200, headers, json.dumps(payload).encode())

    def _expanded(self, info: dict[str, Any]) -> dict[str, Any] | None:
        """Only the fields named by `expand` (the client sends `expand=a&expand=b`), or None when not asked."""
        expand = self.query.get("expand", []) + self.query.get("expand[]", [])
        return {"_id": info["_id"], "id": info["id"], **{k: info[k] for k in expand if k in info}} if expand else None

    def _api(self, segments: list[str]) -> None:
        """/api/models[/{repo_id}[/revision|tree|paths-info|refs/...]]."""
        if not segments or segments == [""]:
            return self._list_models()
        repo, rest = self.hub._split_repo_id([unquote(s) for s in segments])
        op = rest[0] if rest else None
        revision = unquote(rest[1]) if len(rest) > 1 else "main"
        if op is None and self.command == "GET":
            return self._model_info(repo, "main")
        if op == "revision" and self.command == "GET":
            return self._model_info(repo, revision)
        if op == "tree" and self.command == "GET":
            return self._tree(repo, revision, "/".join(unquote(s) for s in rest[2:]).strip("/"))
        if op == "paths-info" and self.command == "POST":
            return self._paths_info(repo, revision)
        if op == "refs" and self.command == "GET":
            return self._refs(repo)
        raise _Reply(404, f"Sorry, we can't find the page /api/models/{'/'.join(segments)}.")

    def _list_models(self) -> None:
        """Search, filter, sort and page through the visible repos, paging with a `Link: rel="next"` header."""
        heads = self.hub._visible_heads(self._token())
        rows = [repo.summary(commit) for repo, commit in heads.values()]
        search, author = (self._param("search") or "").lower(), self._param("author")
        for key, param in (("pipeline_tag", "pipeline_tag"), ("library_name", "library")):
            rows = [r for r in rows if self._param(param) in (None, r[key])]
        rows = [r for r in rows if search in r["id"].lower() and (author is None or r["author"] == author)]
        for wanted in self.query.get("filter", []):
            rows = [r for r in rows if wanted in r["tags"] or wanted in (r["pipeline_tag"], r["library_name"])]
        if (gated := self._param("gated")) is not None:
            rows = [r for r in rows if bool(r["gated"]) == (gated.lower() == "true")]
        if sort := self._param("sort"):
            rows.sort(key=lambda r: r["id"])  # stable tie-break for equal sort keys
            # Rows lacking the field sort last when descending, without comparing None to values.
            rows.sort(key=lambda r: (r.get(sort) is not None, r.get(sort)), reverse=self._param("direction") != "1")
        limit = int(self._param("limit") or self.hub.page_size)
        self._page([self._shape_row(r, *heads[r["id"]]) for r in rows], min(limit, self.hub.page_size))

    def _shape_row(self, row: dict[str, Any], repo: _Repo, commit: _Commit) -> dict[str, Any]:
        """Keep only the `expand`ed fields, or add what `full`/`cardData`/`config` ask for."""
        extra = [k for k, flag in (("siblings", "full"), ("cardData", "cardData"), ("config", "config"))
                 if self._flag(flag)]
        if not extra and "expand" not in self.query and "expand[]" not in self.query:
            return row
        info = repo.info(commit, blobs=False)
        return self._expanded(info) or {**row, **{k: info[k] for k in extra if k in info}}

    def _page(self, items: list[Any], size: int) -> None:
        """Answer one page of `items`, linking to the next page through a `cursor` offset like the Hub does."""
        offset = int(self._param("cursor") or 0)
        headers = {}
        if offset + size < len(items):
            query = {k: v for k, v in self.query.items() if k != "cursor"} | {"cursor": [str(offset + size)]}
            path = urlsplit(self.path).path
            headers["Link"] = f'<{self.hub.endpoint}{path}?{urlencode(query, doseq=True)}>; rel="next"'
        self._json(items[offset : offset + size], headers)

    def _token(self) -> str | None:
        """Bearer token from the Authorization header."""
        auth = self.headers.get("Authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def _model_info(self, repo_id: str, revision: str) -> None:
        repo, commit = self.hub._lookup(repo_id, revision, self._token(), files=False)
        info = repo.info(commit, blobs=self._flag("blobs"))
        self._json(self._expanded(info) or info)

    def _tree(self, repo_id: str, revision: str, folder: str) -> None:
        _, commit = self.hub._lookup(repo_id, revision, self._token(), files=False)
        if folder and folder not in commit.dirs():
            raise _Reply(404, f"{folder} does not exist on {revision}", "EntryNotFound")
        self._page(commit.listing(folder, self._flag("recursive"), self._flag("expand")), self.hub.page_size)

    def _paths_info(self, repo_id: str, revision: str) -> None:
        """POST paths-info: the client sends a form (`paths` repeated, `expand`); JSON is accepted too."""
        _, commit = self.hub._lookup(repo_id, revision, self._token(), files=False)
        if "json" in (self.headers.get("Content-Type") or ""):
            body = json.loads(self.body or b"{}")
            paths, expand = body.get("paths", []), str(body.get("expand", "")).lower() in ("1", "true")
        else:
            form = parse_qs(self.body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), (form.get("expand") or [""])[0].lower() in ("1", "true")
        paths = [paths] if isinstance(paths, str) else paths
        self._json([e for p in paths if (e := commit.entry(p.strip("/"), expand)) is not None])

    def _refs(self, repo_id: str) -> None:
        repo, _ = self.hub._lookup(repo_id, "main", self._token(), files=False)
        branches = [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": commit.sha}
            for name, commit in sorted(repo.branches.items())
        ]
        self._json({"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def _resolve(self, repo_id: str, rest: list[str]) -> None:
        """HEAD/GET /{repo_id}/resolve/{rev}/{path}: serve the file directly (no CDN redirect, no Xet headers)."""
        if len(rest) < 2:
            raise _Reply(404, "Invalid resolve url")
        revision, path = unquote(rest[0]), unquote("/".join(rest[1:]))
        _, commit = self.hub._lookup(repo_id, revision, self._token(), files=True)
        blob = commit.files.get(path)
        if blob is None:
            # X-Repo-Commit lets the client cache the file's absence (.no_exist) for this commit.
            raise _Reply(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        size = len(blob.data)
        headers = {
            "Content-Type": mimetypes.guess_type(path)[0] or "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{blob.etag}"',
            "X-Repo-Commit": commit.sha,
        }
        if blob.lfs:
            headers |= {"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(size)}
        try:
            byte_range = _parse_range(self.headers.get("Range"), size)
        except ValueError:
            raise _Reply(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
        start, end = byte_range or (0, size - 1)
        fault = self.hub._take_fault(repo_id, path, self.command)
        if fault is not None and fault.kind == "delay":
            self.hub._stopping.wait(fault.seconds)
            fault = None
        if fault is not None and fault.kind == "status":
            retry = {"Retry-After": "1"} if fault.status in (429, 503) else {}
            raise _Reply(fault.status, f"Injected HTTP {fault.status}", headers=retry)
        if byte_range:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._start(206 if byte_range else 200, {**headers, "Content-Length": str(end - start + 1)})
        if self.command == "GET":
            self._stream(blob.data, start, end, fault)

    def _stream(self, data: bytes, start: int, end: int, fault: Fault | None) -> None:
        """Send data[start:end+1] in chunks, honouring a drop/stall/corrupt fault at its exact byte position."""
        body = data[start : end + 1]
        if fault is not None and fault.kind == "corrupt" and start <= fault.after_bytes <= end:
            at = fault.after_bytes - start
            body = body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1 :]
        cut = fault.after_bytes if fault is not None and fault.kind in ("drop", "stall") else len(body)
        for offset in range(0, min(cut, len(body)), CHUNK_SIZE):
            chunk = body[offset : min(offset + CHUNK_SIZE, cut)]
            self.hub._pace(len(chunk))
            self.wfile.write(chunk)
        if fault is None or fault.kind == "corrupt":
            return
        if fault.kind == "stall" and not self.hub._stopping.wait(fault.seconds):
            for offset in range(cut, len(body), CHUNK_SIZE):  # the hiccup is over: finish the answer
                self.wfile.write(body[offset : offset + CHUNK_SIZE])
            return
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)  # drop (or a stall cut short by stop()): truncated body


class _Server(ThreadingHTTPServer):
    """Threaded server that knows its stand-in and its open connections."""

    daemon_threads = True

    def __init__(self, hub: HubStandIn) -> None:
        self.hub = hub
        self.connections: set[socket.socket] = set()
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients hanging up; still print real bugs."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class HubStandIn:
    """In-process stand-in for the Hugging Face Hub that the real huggingface_hub client can talk to."""

    def __init__(self) -> None:
        self.endpoint = ""
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path?query, lower-cased headers)
        self.page_size = 1000  # the Hub's largest page; lower it to exercise Link pagination with few repos
        self.link_rate: float | None = None  # bytes/s shared by all downloads, to act like a real network link
        self._link_free_at = 0.0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._repos: dict[str, _Repo] = {}
        self._faults: dict[tuple[str, str], list[Fault]] = {}
        self._tokens: dict[str, set[str]] = {}
        self._clock = 0

    def _pace(self, n: int) -> None:
        """Hold a chunk back until a link of link_rate bytes/s shared by every download would have carried it."""
        if not self.link_rate:
            return
        with self._lock:
            now = time.monotonic()
            self._link_free_at = max(now, self._link_free_at) + n / self.link_rate
            wait = self._link_free_at - now - n / self.link_rate
        if wait > 0:
            time.sleep(wait)

    def start(self) -> HubStandIn:
        """Serve on a free 127.0.0.1 port from a daemon thread."""
        self._stopping.clear()
        server = self._server = _Server(self)
        host, port = server.server_address[:2]
        self.endpoint = f"http://{host}:{port}"
        # A short poll interval keeps stop(), which waits for the serve loop to notice, fast at every teardown.
        serve = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        serve.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake stalled answers and close kept-alive connections."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        for conn in list(self._server.connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client
        self._server.server_close()
        self._server = None

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes] | pathlib.Path,
        *,
        revision: str = "main",
        gated: bool = False,
        private: bool = False,
        pipeline_tag: str | None = "text-generation",
        tags: list[str] | None = None,
        library_name: str | None = "transformers",
        downloads: int = 0,
        likes: int = 0,
        author: str | None = None,
        lfs_suffixes: tuple[str, ...] = DEFAULT_LFS_SUFFIXES,
    ) -> str:
        """Commit `files` (or every file under a folder) to branch `revision`; return the new commit sha."""
        if isinstance(files, pathlib.Path):
            files = {p.relative_to(files).as_posix(): p.read_bytes() for p in sorted(files.rglob("*")) if p.is_file()}
        blobs = {path: _Blob.of(data, path.endswith(lfs_suffixes)) for path, data in files.items()}
        meta = {
            "gated": gated, "private": private, "pipeline_tag": pipeline_tag, "tags": list(tags or []),
            "library_name": library_name, "downloads": downloads, "likes": likes,
            "author": author if author is not None else (repo_id.split("/")[0] if "/" in repo_id else None),
        }
        with self._lock:
            self._clock += 1
            date = EPOCH + timedelta(seconds=self._clock)
            repo = self._repos.setdefault(repo_id, _Repo(repo_id, meta, date))
            repo.meta = meta  # the latest call describes the repo; its commits accumulate
            tree = json.dumps({p: b.git_oid for p, b in sorted(blobs.items())})
            sha = hashlib.sha1(f"{repo_id}\0{revision}\0{self._clock}\0{tree}".encode()).hexdigest()
            commit = _Commit(sha, blobs, date, repo.branches.get(revision))
            repo.commits[sha] = repo.branches[revision] = commit
            return sha

    def inject(self, repo_id: str, path: str, fault: Fault) -> None:
        """Queue `fault` for GET downloads of `path`; queued faults fire in order."""
        with self._lock:
            # A copy, so counting hits down never changes the caller's Fault.
            self._faults.setdefault((repo_id, path), []).append(replace(fault))

    def allow_token(self, repo_id: str, token: str) -> None:
        """Let `token` read the gated or private `repo_id`."""
        with self._lock:
            self._tokens.setdefault(repo_id, set()).add(token)

    def remove_repo(self, repo_id: str) -> None:
        """Forget a repo with its faults and tokens."""
        with self._lock:
            self._repos.pop(repo_id, None)
            self._tokens.pop(repo_id, None)
            self._faults = {key: f for key, f in self._faults.items() if key[0] != repo_id}

    def reset(self) -> None:
        """Drop all repos, faults, tokens and the request log."""
        with self._lock:
            self._repos.clear()
            self._faults.clear()
            self._tokens.clear()
            self.requests.clear()

    def _log(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((method, path, headers))

    def _split_repo_id(self, segments: list[str]) -> tuple[str, list[str]]:
        """Split API path segments into a repo id (one or two segments, known repos first) and the rest."""
        with self._lock:
            if len(segments) >= 2 and "/".join(segments[:2]) in self._repos:
                return "/".join(segments[:2]), segments[2:]
            if segments[0] in self._repos or segments[1:2] in (["revision"], ["tree"], ["paths-info"], ["refs"]):
                return segments[0], segments[1:]
            return "/".join(segments[:2]), segments[2:]

    def _lookup(self, repo_id: str, revision: str, token: str | None, *, files: bool) -> tuple[_Repo, _Commit]:
        """Find a repo at a revision, enforcing private access always and gating on file content only (like the Hub)."""
        with self._lock:
            repo = self._repos.get(repo_id)
            allowed = token is not None and token in self._tokens.get(repo_id, set())
        if repo is None:
            raise _Reply(404, "Repository not found", "RepoNotFound")
        if repo.meta["private"] and not allowed:
            raise _Reply(401, "Repository not found", "RepoNotFound")  # the Hub hides private repos this way
        if files and repo.meta["gated"] and not allowed:
            if token is None:
                raise _Reply(401, f"Access to model {repo_id} is restricted. You must have access to it and be "
                             "authenticated to access it. Please log in.", "GatedRepo")
            raise _Reply(403, f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                         f"Visit {self.endpoint}/{repo_id} to ask for access.", "GatedRepo")
        with self._lock:
            commit = repo.resolve(revision)
        if commit is None:
            raise _Reply(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo, commit

    def _visible_heads(self, token: str | None) -> dict[str, tuple[_Repo, _Commit]]:
        """Every repo the token may see with its head commit, in creation order."""
        with self._lock:
            return {
                repo_id: (repo, repo.head())
                for repo_id, repo in self._repos.items()
                if not repo.meta["private"] or token in self._tokens.get(repo_id, set())
            }

    def _take_fault(self, repo_id: str, path: str, method: str) -> Fault | None:
        """The next armed fault for a file and request method, counting this hit against its `times`."""
        with self._lock:
            queue = self._faults.get((repo_id, path))
            if not queue or queue[0].method != method:
                return None
            fault = queue[0]
            if fault.times > 0:
                fault.times -= 1  # our private copy (see inject)
                if fault.times == 0:
                    queue.pop(0)
            return fault


class SilentHub:
    """A hub that accepts every connection and never answers: the client must give up on its own."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._held: list[socket.socket] = []
        self._stopping = threading.Event()
        self.accepted = 0
        host, port = self._listener.getsockname()[:2]
        self.endpoint = f"http://{host}:{port}"

    def _serve(self) -> None:
        self._listener.settimeout(0.05)
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(conn)
            self.accepted += 1
            self._accepted(conn)

    def _accepted(self, conn: socket.socket) -> None:
        """Handle a new connection: this hub keeps it open and never reads from or writes to it."""

    def __enter__(self) -> SilentHub:
        threading.Thread(target=self._serve, name="silent-hub", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._listener.close()
        for conn in self._held:
            conn.close()


class DripHub(SilentHub):
    """A hub that answers every request at once with `status` and its headers, then sends the body.

    With `interval`, the body is one byte every `interval` seconds and never ends (each read gets its byte in time,
    so only an overall deadline stops the client); without, it is sent whole and the connection kept alive.
    """

    def __init__(self, status: int = 200, interval: float | None = 3.0) -> None:
        super().__init__()
        self.status = status
        self.interval = interval
        self.open = 0  # connections the client has not closed yet
        self._count = threading.Lock()

    def _accepted(self, conn: socket.socket) -> None:
        with self._count:
            self.open += 1
        threading.Thread(target=self._answer, args=(conn,), name="drip-hub", daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            self._exchange(conn)
        finally:
            with self._count:
                self.open -= 1

    def _exchange(self, conn: socket.socket) -> None:
        body = json.dumps({"error": f"status {self.status}"}).encode()
        try:
            while not self._stopping.is_set():
                request = b""
                while b"\r\n\r\n" not in request:
                    data = conn.recv(65536)
                    if not data:
                        return
                    request += data
                length = 10**9 if self.interval is not None else len(body)
                head = (f"HTTP/1.1 {self.status} Answer\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {length}\r\n\r\n").encode()
                if request.startswith(b"HEAD"):
                    conn.sendall(head)
                    continue
                if self.interval is None:
                    conn.sendall(head + body)
                    continue
                conn.sendall(head + b"[")
                while not self._stopping.wait(self.interval):
                    conn.sendall(b" ")
                return
        except OSError:
            return  # the client gave up and closed its end


@pytest.fixture
def hub() -> Iterator[HubStandIn]:
    """A started hub stand-in, stopped after the test."""
    with HubStandIn() as stand_in:
        yield stand_in
