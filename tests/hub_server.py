"""A small Hugging Face Hub-compatible HTTP server for tests: stdlib only, file-backed, on 127.0.0.1.

It speaks the subset of the Hub protocol that ``huggingface_hub`` (2.x, with ``HF_HUB_DISABLE_XET=1``)
and ``transformers``/``peft`` use to publish and load a model:

* ``GET /api/whoami-v2``, ``POST /api/validate-yaml``
* ``POST /api/repos/create`` (409 with the URL when the repo exists, so ``exist_ok=True`` works),
  ``DELETE /api/repos/delete``
* ``GET /api/{models,datasets,spaces}/{id}[/revision/{rev}]`` (repo info with ``sha`` and ``siblings``)
* ``POST .../preupload/{rev}`` (``lfs`` or ``regular`` per file, with the remote oid so unchanged files
  are skipped), ``POST .../commit/{rev}`` (NDJSON: ``file``, ``lfsFile``, ``deletedFile``,
  ``deletedFolder``), ``GET .../tree/{rev}[/{path}]``, ``POST .../paths-info/{rev}``, ``GET .../refs``,
  ``GET .../commits/{rev}``
* git-LFS: ``POST /{id}.git/info/lfs/objects/batch`` (basic transfer) and ``PUT /lfs-upload/{sha256}``
* ``HEAD``/``GET /{id}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag`` and
  ``X-Linked-Size`` for LFS files, and ``Range``.

Storage under ``root``: ``objects/<sha256>`` holds file contents, ``repos/<type>/<namespace>/<name>.json``
holds a repo's commits (each with its full file tree) and its ``main`` ref. Every commit is kept, so a
file can be resolved at any past commit and uploads on top of an existing repo work.

Not implemented: Xet, pull requests, branches other than ``main``, copies, real access control (any
bearer token is accepted, unless ``tokens`` is given, in which case others get 401).

Use it in a thread (``HubServer(root).start()``, ``.url``, ``.stop()``) or as a process::

    python tests/hub_server.py --port 8765 --root /tmp/hub
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

USER = "hf-plugins-tester"
REPO_TYPES = ("model", "dataset", "space")
# Files the real Hub stores in LFS by default (its initial .gitattributes), plus anything binary or big.
LFS_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".npy", ".npz", ".pkl",
    ".model", ".png", ".jpg", ".jpeg", ".gif", ".wav", ".mp3", ".flac", ".zip", ".gz", ".tar", ".parquet",
    ".arrow", ".tflite", ".ot", ".joblib",
)
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()


class HubError(Exception):
    """An HTTP error answer: status, message, optional ``X-Error-Code``."""

    def __init__(self, status: int, message: str, code: str | None = None, body: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.body = status, message, code, body


class HubStore:
    """The file-backed state of the server: content-addressed objects and one JSON file per repo."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    # --- objects -------------------------------------------------------------------------------
    def object_path(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise HubError(400, f"invalid sha256 oid {sha256!r}")
        return self.root / "objects" / sha256

    def has_object(self, sha256: str) -> bool:
        return self.object_path(sha256).is_file()

    def put_object(self, data: bytes, expected_sha256: str | None = None) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None and sha != expected_sha256:
            raise HubError(400, f"content sha256 {sha} does not match the oid {expected_sha256}")
        path = self.object_path(sha)
        if not path.is_file():
            _atomic_write(path, data)
        return sha

    # --- repos ---------------------------------------------------------------------------------
    def repo_path(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / repo_type / f"{repo_id}.json"

    def load(self, repo_type: str, repo_id: str) -> dict:
        path = self.repo_path(repo_type, repo_id)
        if not path.is_file():
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return json.loads(path.read_text())

    def save(self, repo_type: str, repo_id: str, state: dict) -> None:
        _atomic_write(self.repo_path(repo_type, repo_id), json.dumps(state).encode())

    def create(self, repo_type: str, repo_id: str, private: bool) -> bool:
        """Create a repo with an initial commit holding ``.gitattributes``; False if it exists."""
        with self.lock:
            if self.repo_path(repo_type, repo_id).is_file():
                return False
            now = _now()
            state = {"id": repo_id, "type": repo_type, "private": private, "createdAt": now, "commits": {}, "refs": {}}
            sha = self.put_object(GITATTRIBUTES)
            tree = {".gitattributes": _entry(sha, GITATTRIBUTES, lfs=False)}
            self._add_commit(state, tree, "initial commit", "", now)
            self.save(repo_type, repo_id, state)
            return True

    def delete(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            path = self.repo_path(repo_type, repo_id)
            if not path.is_file():
                raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
            path.unlink()

    def commit(self, repo_type: str, repo_id: str, revision: str, header: dict, ops: list[dict]) -> str:
        with self.lock:
            state = self.load(repo_type, repo_id)
            head = self.resolve_revision(state, revision)
            parent = header.get("parentCommit")
            if parent and not head.startswith(parent):
                raise HubError(412, f"A commit has happened since {parent}; the head is {head}")
            tree = dict(state["commits"][head]["tree"])
            for op in ops:
                key, value = op.get("key"), op.get("value") or {}
                path = value.get("path", "")
                if key == "file":
                    data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value["content"].encode()
                    tree[path] = _entry(self.put_object(data), data, lfs=False)
                elif key == "lfsFile":
                    oid = value.get("oid", "")
                    if not self.has_object(oid):
                        raise HubError(422, f"LFS object {oid} of {path!r} was never uploaded")
                    size = self.object_path(oid).stat().st_size
                    tree[path] = {"sha256": oid, "size": size, "lfs": True, "oid": _git_oid(_lfs_pointer(oid, size))}
                elif key == "deletedFile":
                    if tree.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    for name in [n for n in tree if n.startswith(prefix)]:
                        del tree[name]
                else:
                    raise HubError(400, f"unsupported commit operation {key!r}")
            oid = self._add_commit(state, tree, header.get("summary") or "update", header.get("description") or "", _now(), head)
            self.save(repo_type, repo_id, state)
            return oid

    @staticmethod
    def _add_commit(state: dict, tree: dict, title: str, message: str, date: str, parent: str | None = None) -> str:
        payload = json.dumps({"tree": tree, "parent": parent, "title": title, "message": message, "date": date}, sort_keys=True)
        oid = hashlib.sha1(payload.encode() + str(time.monotonic_ns()).encode()).hexdigest()
        state["commits"][oid] = {"tree": tree, "parent": parent, "title": title, "message": message, "date": date}
        state["refs"]["main"] = oid
        return oid

    @staticmethod
    def resolve_revision(state: dict, revision: str) -> str:
        revision = unquote(revision)
        if revision in state["refs"]:
            return state["refs"][revision]
        if revision.startswith("refs/heads/") and revision[len("refs/heads/"):] in state["refs"]:
            return state["refs"][revision[len("refs/heads/"):]]
        if len(revision) >= 7 and re.fullmatch(r"[0-9a-f]+", revision):
            matches = [c for c in state["commits"] if c.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class HubServer:
    """Runs :class:`HubHandler` on ``127.0.0.1`` in a daemon thread; ``url`` is its endpoint.

    Args:
        root: the storage folder.
        port: 0 picks a free port.
        tokens: when given, only these bearer tokens are accepted (others get 401).
        fail: ``{path_regex: count}``; the first ``count`` requests whose path matches get a 503, to test
            clients' retries. Counts are shared across threads and can be changed while running.
    """

    def __init__(self, root, port: int = 0, tokens=None, fail: dict | None = None):
        self.store = HubStore(root)
        self.tokens = set(tokens) if tokens else None
        self.fail = dict(fail or {})
        self.requests: list[tuple[str, str]] = []
        handler = type("BoundHubHandler", (HubHandler,), {"hub": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class HubHandler(BaseHTTPRequestHandler):
    """Routes one request; see the module docstring for the endpoints."""

    protocol_version = "HTTP/1.1"
    server_version = "hf-plugins-test-hub/1.0"
    hub: HubServer  # set on the bound subclass

    # --- plumbing ------------------------------------------------------------------------------
    def log_message(self, format, *args):  # quiet: tests read the request log instead
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        path = url.path
        self.hub.requests.append((method, path))
        try:
            body = self._read_body() if method in ("POST", "PUT", "DELETE") else b""
            self._maybe_fail(path)
            self._check_auth(path)
            for verb, pattern, name in ROUTES:
                if verb == method or (verb == "GET" and method == "HEAD"):
                    match = re.fullmatch(pattern, path)
                    if match:
                        return getattr(self, name)(body, **{k: None if v is None else unquote(v) for k, v in match.groupdict().items()})
            raise HubError(404, f"no route for {method} {path}")
        except HubError as err:
            self._send_json(err.body or {"error": err.message}, err.status, {"X-Error-Code": err.code, "X-Error-Message": err.message})
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True
        except Exception as err:  # a bug in the server: answer 500 with the reason instead of hanging up
            self._send_json({"error": f"{type(err).__name__}: {err}"}, 500)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _maybe_fail(self, path: str) -> None:
        with self.hub.store.lock:
            for pattern, count in self.hub.fail.items():
                if count > 0 and re.search(pattern, path):
                    self.hub.fail[pattern] = count - 1
                    raise HubError(503, "Service temporarily unavailable (injected failure)")

    def _check_auth(self, path: str) -> None:
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        if self.hub.tokens is not None and token is not None and token not in self.hub.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        self.token = token

    def _require_token(self) -> None:
        if not self.token:
            raise HubError(401, "You must be authenticated to do this (no token)")

    def _send(self, status: int, data: bytes, headers: dict | None = None, content_type: str = "application/octet-stream") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            if value is not None:
                self.send_header(key, str(value))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers, "application/json")

    def _repo(self, kind: str | None, repo_id: str) -> tuple[str, str]:
        repo_type = {None: "model", "": "model", "models": "model", "datasets": "dataset", "spaces": "space"}[kind]
        return repo_type, repo_id

    def _prefix(self, repo_type: str) -> str:
        return "" if repo_type == "model" else f"{repo_type}s/"

    def _form_or_json(self, body: bytes) -> dict:
        if "json" in self.headers.get("Content-Type", ""):
            return json.loads(body or b"{}")
        return {k: (v if k == "paths" else v[0]) for k, v in parse_qs(body.decode()).items()}

    # --- account -------------------------------------------------------------------------------
    def whoami(self, body):
        self._require_token()
        self._send_json({
            "type": "user", "id": "0" * 24, "name": USER, "fullname": "hf-plugins tester", "email": None,
            "emailVerified": False, "isPro": False, "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
        })

    def validate_yaml(self, body):
        content = json.loads(body or b"{}").get("content", "")
        errors = []
        if content.startswith("---") and not re.search(r"^---\s*$", content[3:], re.MULTILINE):
            errors.append({"message": "the YAML front matter is not closed by a '---' line"})
        if errors:
            raise HubError(400, errors[0]["message"], body={"errors": errors})
        self._send_json({"errors": [], "warnings": []})

    # --- repos ---------------------------------------------------------------------------------
    def create_repo(self, body):
        self._require_token()
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        name, namespace = payload.get("name"), payload.get("organization") or USER
        if repo_type not in REPO_TYPES or not name or not re.fullmatch(r"[\w.-]+", name) or not re.fullmatch(r"[\w.-]+", namespace):
            raise HubError(400, f"invalid repo name {namespace}/{name} or type {repo_type}")
        repo_id = f"{namespace}/{name}"
        url = f"{self.hub.url}/{self._prefix(repo_type)}{repo_id}"
        created = self.hub.store.create(repo_type, repo_id, payload.get("visibility") == "private" or bool(payload.get("private")))
        if not created:
            raise HubError(409, f"You already created this {repo_type} repo", body={"error": f"You already created this {repo_type} repo", "url": url})
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def delete_repo(self, body):
        self._require_token()
        payload = json.loads(body or b"{}")
        repo_id = f"{payload.get('organization') or USER}/{payload.get('name')}"
        self.hub.store.delete(payload.get("type") or "model", repo_id)
        self._send_json({})

    def repo_info(self, body, kind, repo_id, revision=None):
        repo_type, repo_id = self._repo(kind, repo_id)
        revision = revision or "main"
        state = self.hub.store.load(repo_type, repo_id)
        sha = self.hub.store.resolve_revision(state, revision)
        commit = state["commits"][sha]
        blobs = self.query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path, entry in sorted(commit["tree"].items()):
            sibling = {"rfilename": path}
            if blobs:
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    sibling["lfs"] = {"size": entry["size"], "sha256": entry["sha256"], "pointerSize": len(_lfs_pointer(entry["sha256"], entry["size"]))}
            siblings.append(sibling)
        info = {
            "id": repo_id, "_id": sha[:24], "author": repo_id.split("/")[0], "sha": sha, "private": state["private"],
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            "createdAt": state["createdAt"], "lastModified": commit["date"],
        }
        if repo_type == "model":
            info["modelId"] = repo_id
            info.update(self._card_fields(commit["tree"]))
        self._send_json(info)

    def _card_fields(self, tree: dict) -> dict:
        """library_name / pipeline_tag / tags from README.md's front matter (flat keys only, no YAML parser)."""
        entry = tree.get("README.md")
        if entry is None:
            return {}
        text = self.hub.store.object_path(entry["sha256"]).read_text(errors="replace")
        match = re.match(r"---\n(.*?)\n---", text, re.DOTALL)
        out: dict = {}
        if match:
            for key in ("library_name", "pipeline_tag", "license"):
                found = re.search(rf"^{key}:\s*(\S+)\s*$", match.group(1), re.MULTILINE)
                if found:
                    out[key] = found.group(1).strip("'\"")
            tags = re.search(r"^tags:\n((?:- .*\n?)+)", match.group(1), re.MULTILINE)
            if tags:
                out["tags"] = [t[2:].strip().strip("'\"") for t in tags.group(1).splitlines()]
        return out

    def refs(self, body, kind, repo_id):
        repo_type, repo_id = self._repo(kind, repo_id)
        state = self.hub.store.load(repo_type, repo_id)
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in state["refs"].items()]
        out = {"branches": branches, "converts": [], "tags": []}
        if self.query.get("include_prs", ["0"])[0] not in ("0", "false", "False"):
            out["pullRequests"] = []
        self._send_json(out)

    def commits(self, body, kind, repo_id, revision):
        repo_type, repo_id = self._repo(kind, repo_id)
        state = self.hub.store.load(repo_type, repo_id)
        oid, out = self.hub.store.resolve_revision(state, revision), []
        while oid is not None:
            c = state["commits"][oid]
            out.append({"id": oid, "title": c["title"], "message": c["message"], "date": c["date"], "authors": [{"user": USER}]})
            oid = c["parent"]
        self._send_json(out)

    # --- files ---------------------------------------------------------------------------------
    def tree(self, body, kind, repo_id, revision, path=None):
        repo_type, repo_id = self._repo(kind, repo_id)
        path = path or ""
        state = self.hub.store.load(repo_type, repo_id)
        sha = self.hub.store.resolve_revision(state, revision)
        tree = state["commits"][sha]["tree"]
        path = path.strip("/")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("true", "1")
        prefix = f"{path}/" if path else ""
        if path and path not in tree and not any(n.startswith(prefix) for n in tree):
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        entries, folders = [], set()
        for name in sorted(tree):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix):].split("/")
            for depth in range(1, len(parts)):
                folder = prefix + "/".join(parts[:depth])
                if (recursive or depth == 1) and folder not in folders:
                    folders.add(folder)
                    entries.append(_folder_entry(folder))
            if recursive or len(parts) == 1:
                entries.append(_file_entry(name, tree[name]))
        self._send_json(entries)

    def paths_info(self, body, kind, repo_id, revision):
        repo_type, repo_id = self._repo(kind, repo_id)
        state = self.hub.store.load(repo_type, repo_id)
        tree = state["commits"][self.hub.store.resolve_revision(state, revision)]["tree"]
        paths = self._form_or_json(body).get("paths") or []
        out = []
        for path in ([paths] if isinstance(paths, str) else paths):
            path = path.strip("/")
            if path in tree:
                out.append(_file_entry(path, tree[path]))
            elif any(n.startswith(path + "/") for n in tree):
                out.append(_folder_entry(path))
        self._send_json(out)

    def preupload(self, body, kind, repo_id, revision):
        repo_type, repo_id = self._repo(kind, repo_id)
        state = self.hub.store.load(repo_type, repo_id)
        tree = state["commits"][self.hub.store.resolve_revision(state, revision)]["tree"]
        files = []
        for f in json.loads(body or b"{}").get("files", []):
            sample = base64.b64decode(f.get("sample") or "")
            lfs = f["path"].lower().endswith(LFS_SUFFIXES) or f.get("size", 0) >= LFS_MIN_SIZE or b"\x00" in sample
            remote = tree.get(f["path"])
            oid = None
            if remote is not None and remote["lfs"] == lfs:
                oid = remote["sha256"] if lfs else remote["oid"]
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._send_json({"files": files, "commitOid": state["refs"]["main"]})

    def commit(self, body, kind, repo_id, revision):
        self._require_token()
        repo_type, repo_id = self._repo(kind, repo_id)
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "a commit payload starts with a header line")
        oid = self.hub.store.commit(repo_type, repo_id, revision, lines[0]["value"], lines[1:])
        url = f"{self.hub.url}/{self._prefix(repo_type)}{repo_id}/commit/{oid}"
        self._send_json({"success": True, "commitOid": oid, "commitUrl": url, "pullRequestUrl": None})

    # --- git-LFS -------------------------------------------------------------------------------
    def lfs_batch(self, body, kind, repo_id):
        repo_type, repo_id = self._repo(kind, repo_id)
        self.hub.store.load(repo_type, repo_id)  # 404 for a missing repo
        payload = json.loads(body or b"{}")
        operation = payload.get("operation", "upload")
        if operation == "upload":
            self._require_token()
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], obj["size"]
            item = {"oid": oid, "size": size, "authenticated": True}
            present = self.hub.store.has_object(oid)
            if operation == "upload" and not present:
                item["actions"] = {"upload": {"href": f"{self.hub.url}/lfs-upload/{oid}", "expires_in": 3600}}
            elif operation == "download":
                if present:
                    item["actions"] = {"download": {"href": f"{self.hub.url}/lfs-object/{oid}", "expires_in": 3600}}
                else:
                    item["error"] = {"code": 404, "message": "Object does not exist"}
            objects.append(item)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode(), content_type="application/vnd.git-lfs+json")

    def lfs_put(self, body, oid):
        self.hub.store.put_object(body, expected_sha256=oid)
        self._send(200, b"", {"ETag": f'"{oid}"'})

    def lfs_get(self, body, oid):
        path = self.hub.store.object_path(oid)
        if not path.is_file():
            raise HubError(404, f"LFS object {oid} not found", "EntryNotFound")
        self._send(200, path.read_bytes())

    # --- downloads -----------------------------------------------------------------------------
    def resolve(self, body, kind, repo_id, revision, path):
        repo_type, repo_id = self._repo(kind, repo_id)
        state = self.hub.store.load(repo_type, repo_id)
        sha = self.hub.store.resolve_revision(state, revision)
        entry = state["commits"][sha]["tree"].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry["oid"]}"', "Accept-Ranges": "bytes"}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{entry["sha256"]}"', "X-Linked-Size": entry["size"]})
        data = self.hub.store.object_path(entry["sha256"]).read_bytes()
        status = 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and (match.group(1) or match.group(2)):
            start, end = match.group(1), match.group(2)
            if start == "":  # a suffix range: the last N bytes
                start, end = max(0, len(data) - int(end)), len(data) - 1
            else:
                start, end = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
            if start >= len(data) and len(data) > 0:
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start:end + 1], 206
        self._send(status, data, headers)


_KIND = r"(?:(?P<kind>models|datasets|spaces)/)"
_ID = r"(?P<repo_id>[\w.-]+(?:/[\w.-]+)?)"
_REV = r"(?P<revision>[^/]+)"
ROUTES = [
    ("GET", r"/api/whoami-v2", "whoami"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("POST", r"/api/repos/create", "create_repo"),
    ("DELETE", r"/api/repos/delete", "delete_repo"),
    ("GET", rf"/api/{_KIND}{_ID}/refs", "refs"),
    ("GET", rf"/api/{_KIND}{_ID}/commits/{_REV}", "commits"),
    ("GET", rf"/api/{_KIND}{_ID}/tree/{_REV}(?:/(?P<path>.*))?", "tree"),
    ("POST", rf"/api/{_KIND}{_ID}/paths-info/{_REV}", "paths_info"),
    ("POST", rf"/api/{_KIND}{_ID}/preupload/{_REV}", "preupload"),
    ("POST", rf"/api/{_KIND}{_ID}/commit/{_REV}", "commit"),
    ("GET", rf"/api/{_KIND}{_ID}/revision/{_REV}", "repo_info"),
    ("GET", rf"/api/{_KIND}{_ID}", "repo_info"),
    ("POST", rf"/{_KIND}?{_ID}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_put"),
    ("GET", r"/lfs-object/(?P<oid>[0-9a-f]{64})", "lfs_get"),
    ("GET", rf"/{_KIND}?{_ID}/resolve/{_REV}/(?P<path>.+)", "resolve"),
]


def _entry(sha256: str, data: bytes, lfs: bool) -> dict:
    return {"sha256": sha256, "size": len(data), "lfs": lfs, "oid": _git_oid(data)}


def _file_entry(path: str, entry: dict) -> dict:
    out = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
    if entry["lfs"]:
        out["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": len(_lfs_pointer(entry["sha256"], entry["size"]))}
    return out


def _folder_entry(path: str) -> dict:
    return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="A file-backed Hub-compatible server on 127.0.0.1 for tests.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--root", required=True, help="storage folder")
    args = parser.parse_args(argv)
    server = HubServer(args.root, port=args.port)
    print(f"serving the test Hub at {server.url} (root {args.root}); use HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    main()
