"""A fake W&B server on 127.0.0.1 for the public API's artifact download (`wandb.Api().artifact(...).download()`):
the GraphQL queries it sends (read from wandb/sdk/artifacts/_generated and artifact.py: Viewer, GetDefaultEntity,
ServerFeaturesQuery, ArtifactMembershipByName, FetchArtifactManifest, GetArtifactMembershipFileUrls), the manifest
and the files. Point WANDB_BASE_URL at `url`. Artifacts live in memory: add them with `add_artifact`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


class FakeWandb:
    def __init__(self):
        self.artifacts: dict[tuple[str, str, str], dict] = {}  # (entity, project, collection) -> versions/aliases
        self.queries: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, content_type: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/graphql":
                    return self._send(200, b"{}")
                request = json.loads(body)
                name = re.search(r"(query|mutation)\s+(\w+)", request.get("query", ""))
                name = name.group(2) if name else ""
                fake.queries.append(name)
                data = fake.graphql(name, request.get("variables") or {})
                return self._send(200, json.dumps({"data": data}).encode())

            def do_GET(self):
                m = re.fullmatch(r"/fake-storage/(\d+)/(manifest|file)/?(.*)", self.path)
                if not m:
                    return self._send(404, b"{}")
                version = fake.by_id[int(m.group(1))]
                if m.group(2) == "manifest":
                    return self._send(200, json.dumps(fake.manifest(version)).encode())
                data = version["files"].get(m.group(3))
                return self._send(200, data, "application/octet-stream") if data is not None else self._send(404, b"")

        self.by_id: dict[int, dict] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeWandb":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def add_artifact(self, entity: str, project: str, name: str, files: dict[str, bytes], aliases: list[str],
                     kind: str = "model", metadata: dict | None = None) -> str:
        """A new version of artifact entity/project/name (of type `kind`); returns its version ("v0", "v1", ...)."""
        entry = self.artifacts.setdefault((entity, project, name), {"versions": [], "aliases": {}})
        index = len(entry["versions"])
        version = {"id": len(self.by_id) + 1, "index": index, "files": dict(files), "key": (entity, project, name),
                   "kind": kind, "metadata": metadata or {}}
        self.by_id[version["id"]] = version
        entry["versions"].append(version)
        for alias in [*aliases, "latest", f"v{index}"]:
            entry["aliases"][alias] = version
        return f"v{index}"

    def manifest(self, version: dict) -> dict:
        return {"version": 1, "storagePolicy": "wandb-storage-policy-v1",
                "storagePolicyConfig": {"storageLayout": "V2"},
                "contents": {p: {"digest": _b64md5(d), "size": len(d)} for p, d in sorted(version["files"].items())}}

    def _project(self, entity: str, project: str) -> dict:
        return {"id": base64.b64encode(f"Project:{project}".encode()).decode(), "internalId": "1", "name": project,
                "entity": {"name": entity}}

    def _membership(self, version: dict) -> dict:
        entity, project, name = version["key"]
        collection = {"__typename": "ArtifactSequence", "name": name, "project": self._project(entity, project)}
        aliases = [a for a, v in self.artifacts[version["key"]]["aliases"].items() if v is version]
        files = version["files"]
        digest = hashlib.md5(json.dumps(self.manifest(version), sort_keys=True).encode()).hexdigest()
        artifact = {
            "__typename": "Artifact", "id": str(version["id"]), "artifactSequence": collection,
            "versionIndex": version["index"], "artifactType": {"name": version["kind"]}, "description": None,
            "metadata": json.dumps(version["metadata"]), "ttlDurationSeconds": -1, "ttlIsInherited": True, "tags": [], "historyStep": None,
            "state": "COMMITTED", "size": sum(len(d) for d in files.values()), "digest": digest,
            "digestAlgorithm": "MANIFEST_MD5", "commitHash": digest[:12], "fileCount": len(files),
            "createdAt": "2026-01-01T00:00:00", "updatedAt": None,
        }
        return {"__typename": "ArtifactCollectionMembership", "id": f"m{version['id']}",
                "versionIndex": version["index"], "createdAt": "2026-01-01T00:00:00",
                "aliases": [{"__typename": "ArtifactAlias", "id": f"a{version['id']}{a}", "alias": a} for a in aliases],
                "artifactCollection": {**collection, "__typename": "ArtifactSequence"}, "artifact": artifact}

    def graphql(self, name: str, v: dict) -> dict:
        if name in ("Viewer", "GetDefaultEntity"):
            return {"viewer": {"id": "VXNlcjox", "entity": "me", "username": "me", "email": None, "flags": "{}",
                               "teams": {"edges": []}}}
        if name == "ServerFeaturesQuery":
            return {"serverInfo": {"features": []}}
        if name == "ArtifactMembershipByName":
            collection, _, alias = v["name"].partition(":")
            entry = self.artifacts.get((v["entity"], v["project"], collection))
            if entry is None and not any(k[:2] == (v["entity"], v["project"]) for k in self.artifacts):
                return {"project": None}
            version = entry and entry["aliases"].get(alias or "latest")
            return {"project": {"artifactCollectionMembership": self._membership(version) if version else None}}
        if name == "FetchArtifactManifest":
            version = self.by_id[int(v["id"])]
            return {"artifact": {"currentManifest": {"file": {
                "directUrl": f"{self.url}/fake-storage/{version['id']}/manifest"}}}}
        if name == "GetArtifactMembershipFileUrls":
            version = self.artifacts[(v["entity"], v["project"], v["collection"])]["aliases"][v["alias"]]
            edges = [{"node": {"__typename": "File", "name": p,
                               "directUrl": f"{self.url}/fake-storage/{version['id']}/file/{p}"}}
                     for p in sorted(version["files"])]
            return {"project": {"artifactCollection": {"__typename": "ArtifactSequence", "artifactMembership": {
                "files": {"pageInfo": {"__typename": "PageInfo", "endCursor": None, "hasNextPage": False},
                          "edges": edges}}}}}
        return {}
