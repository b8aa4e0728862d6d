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

from local_server import LocalServer


def _b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


class FakeWandb(LocalServer):
    """Artifacts in memory. PINNED: the wandb releases whose private GraphQL this replays (the public API's queries
    change between releases; tests skip on another installed version rather than pass against the wrong one)."""

    PINNED = (">=0.31", "<0.32")

    def __init__(self):
        super().__init__()
        self.artifacts: dict[tuple[str, str, str], dict] = {}  # (entity, project, collection) -> versions/aliases
        self.queries: list[str] = []
        self.by_id: dict[int, dict] = {}

    def handle(self, h, request: dict) -> None:
        if request["method"] == "POST":
            if request["path"] != "/graphql":
                return self.send_json(h, 200, {})
            body = json.loads(request["body"])
            name = re.search(r"(query|mutation)\s+(\w+)", body.get("query", ""))
            name = name.group(2) if name else ""
            self.queries.append(name)
            return self.send_json(h, 200, {"data": self.graphql(name, body.get("variables") or {})})
        m = re.fullmatch(r"/fake-storage/(\d+)/(manifest|file)/?(.*)", request["path"])
        if not m:
            return self.send_json(h, 404, {})
        version = self.by_id[int(m.group(1))]
        if m.group(2) == "manifest":
            return self.send_json(h, 200, self.manifest(version))
        data = version["files"].get(m.group(3))
        if data is None:
            return self.send(h, 404)
        return self.send(h, 200, data, {"Content-Type": "application/octet-stream"})

    def start(self):
        why = self.supports_installed_wandb()
        if why:
            import pytest

            pytest.skip(why)
        return super().start()

    @classmethod
    def supports_installed_wandb(cls) -> str | None:
        """None if the installed wandb is one of PINNED, else why not (for pytest.skip)."""
        from importlib.metadata import version

        from packaging.specifiers import SpecifierSet

        installed = version("wandb")
        if installed in SpecifierSet(",".join(cls.PINNED)):
            return None
        return (f"fake W&B replays wandb {','.join(cls.PINNED)}'s private GraphQL; wandb {installed} is installed: "
                f"update tests/fake_wandb.py from that release's wandb/sdk/artifacts/_generated")

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
