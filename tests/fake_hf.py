"""A fake Hugging Face Hub on 127.0.0.1: the endpoints huggingface_hub calls to create a repo, commit files and
download a snapshot (read from huggingface_hub's hf_api.py, _commit_api.py, file_download.py and
_snapshot_download.py). Point HF_ENDPOINT at `url`.

Repos live in memory. Every request is recorded (method, path, headers with lower-case names, body) so tests can check what was sent.
The preupload answer puts every file in "regular" mode: their bytes travel base64 inside the commit's NDJSON,
where a test can read them (the real Hub would send large files through LFS/Xet, which this fake does not
implement).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field

from local_server import LocalServer


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)  # shas, oldest first
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> files at that commit

    def at(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        if revision == "main" and self.commits:
            return self.commits[-1], self.snapshots[self.commits[-1]]
        if revision in self.snapshots:
            return revision, self.snapshots[revision]
        return None


def _entries(files: dict[str, bytes], prefix: str, recursive: bool, listing: bool = False) -> list[dict]:
    """Tree entries under `prefix` (a listing: its children; paths-info: the path itself), folders included."""
    out, folders = [], set()
    for p, d in sorted(files.items()):
        if not listing:
            if p == prefix:
                out.append({"type": "file", "path": p, "size": len(d), "oid": git_blob_sha(d)})
            elif p.startswith(prefix + "/"):
                folders.add(prefix)
            continue
        if prefix and not p.startswith(prefix + "/"):
            continue
        rest = p[len(prefix) + 1:] if prefix else p
        parts = rest.split("/")
        for i in range(1, len(parts)):
            if recursive or i == 1:
                folders.add("/".join(([prefix] if prefix else []) + parts[:i]))
        if recursive or len(parts) == 1:
            out.append({"type": "file", "path": p, "size": len(d), "oid": git_blob_sha(d)})
    out += [{"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()} for f in sorted(folders)]
    return out


class FakeHub(LocalServer):
    """Model and dataset repos in memory. `fail_create`: an HTTP status repo creation answers instead (e.g. 401)."""

    def __init__(self):
        super().__init__()
        self.repos: dict[str, Repo] = {}  # model repos
        self.datasets: dict[str, Repo] = {}  # dataset repos
        self.commits: list[dict] = []  # decoded commit payloads: {"repo", "kind", "header", "files": {path: bytes}}
        self.fail_create: int | None = None

    def handle(self, h, request: dict) -> None:
        self.route(h, request["method"], request["path"], request["query"], request["body"])

    def _error(self, h, status: int, code: str, message: str, head: bool = False):
        self.send(h, status, json.dumps({"error": message}).encode(),
                  {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}, head=head)

    def body(self, suffix: str):
        """The JSON body of the first request whose path ends with `suffix`."""
        return json.loads(next(r["body"] for r in self.requests if r["path"].endswith(suffix)) or b"{}")

    # ---- state --------------------------------------------------------------------------------------------------
    def add_commit(self, repo_id: str, files: dict[str, bytes], summary: str = "", dataset: bool = False) -> str:
        repo = (self.datasets if dataset else self.repos)[repo_id]
        repo.files.update(files)
        sha = hashlib.sha1(f"{repo_id}:{len(repo.commits)}:{summary}".encode()).hexdigest()
        repo.commits.append(sha)
        repo.snapshots[sha] = dict(repo.files)
        return sha

    # ---- routes -------------------------------------------------------------------------------------------------
    def route(self, h, method: str, path: str, query: str, body: bytes) -> None:
        if method == "POST" and path == "/api/repos/create":
            payload = json.loads(body)
            if self.fail_create:
                return self.send_json(h, self.fail_create, {"error": "Invalid credentials in Authorization header"})
            repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            dataset = payload.get("type") == "dataset"
            repos = self.datasets if dataset else self.repos
            url = f"{self.url}/{'datasets/' if dataset else ''}{repo_id}"
            if repo_id in repos:  # the Hub's 409 names the existing repo's url (create_repo(exist_ok) reads it)
                return self.send_json(h, 409, {"error": "You already created this repo", "url": url})
            private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
            repos[repo_id] = Repo(private=private)
            return self.send_json(h, 200, {"url": url, "name": repo_id})
        if method == "POST" and path == "/api/validate-yaml":
            return self.send_json(h, 200, {"errors": [], "warnings": []})
        m = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)", path)
        if m and method == "GET":  # repo info without a revision: main's
            path = f"{path}/revision/main"
        m = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)/(preupload|commit|revision|tree|paths-info)/([^/]+)(/.*)?",
                         path)
        if m:
            kind, repo_id, what, revision, sub = m.groups()
            repo = (self.repos if kind == "models" else self.datasets).get(repo_id)
            if repo is None or (repo.private and not h.headers.get("Authorization")):
                return self._error(h, 404, "RepoNotFound", f"Repository not found: {repo_id}")
            if what == "preupload":
                files = json.loads(body)["files"]
                return self.send_json(h, 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                                "oid": None} for f in files]})
            if what == "commit":
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                header = next(x["value"] for x in lines if x["key"] == "header")
                files = {x["value"]["path"]: base64.b64decode(x["value"]["content"])
                         for x in lines if x["key"] == "file"}
                self.commits.append({"repo": repo_id, "kind": kind, "header": header, "files": files})
                sha = self.add_commit(repo_id, files, header.get("summary", ""), dataset=kind == "datasets")
                where = f"{self.url}/{'datasets/' if kind == 'datasets' else ''}{repo_id}"
                return self.send_json(h, 200, {"commitUrl": f"{where}/commit/{sha}", "commitOid": sha,
                                     "pullRequestUrl": None})
            found = repo.at(revision)
            if found is None:
                return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
            sha, files = found
            if what == "revision":
                return self.send_json(h, 200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                                     "siblings": [{"rfilename": p} for p in sorted(files)]})
            if what == "paths-info":
                from urllib.parse import parse_qs

                wanted = parse_qs(body.decode()).get("paths", [])
                return self.send_json(h, 200, [entry for p in wanted for entry in _entries(files, p.strip("/"), True)])
            prefix = (sub or "").strip("/")
            recursive = "recursive=true" in query.lower() or "recursive=1" in query
            return self.send_json(h, 200, _entries(files, prefix, recursive, listing=True))
        m = re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m and method in ("GET", "HEAD"):
            dataset, repo_id, revision, name = m.groups()
            repo = (self.datasets if dataset else self.repos).get(repo_id)
            head = method == "HEAD"
            if repo is None:
                return self._error(h, 404, "RepoNotFound", f"Repository not found: {repo_id}", head=head)
            found = repo.at(revision)
            if found is None:
                return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
            sha, files = found
            if name not in files:
                return self._error(h, 404, "EntryNotFound", f"{name} does not exist", head=head)
            data = files[name]
            return self.send(h, 200, data, {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(data)}"',
                                       "Content-Type": "application/octet-stream"}, head=head)
        return self._error(h, 404, "NotFound", f"fake hub has no route for {method} {path}")
