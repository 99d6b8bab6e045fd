"""A small stand-in for the Hugging Face Hub on 127.0.0.1: the repo info, file tree and resolve URLs that
``huggingface_hub.snapshot_download`` asks for, served from local folders (one revision per repo)."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

SHA = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repos: dict[str, Path], sha: str = SHA) -> None:
        self.repos, self.requests, self.sha = repos, [], sha  # (set ``sha`` to publish a new revision)
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, data: object) -> None:
                self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                path = unquote(urlsplit(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                sha = hub.sha
                for repo, folder in hub.repos.items():
                    files = sorted(f for f in folder.iterdir() if f.is_file())
                    if path in (f"/api/models/{repo}", f"/api/models/{repo}/revision/main"):
                        return self._json({"id": repo, "sha": sha, "siblings": [{"rfilename": f.name} for f in files]})
                    if path == f"/api/models/{repo}/tree/{sha}":
                        oids = [hashlib.sha1(f.read_bytes()).hexdigest() for f in files]
                        tree = [{"type": "file", "path": f.name, "size": f.stat().st_size, "oid": oid}
                                for f, oid in zip(files, oids)]  # fmt: skip
                        return self._json(tree)
                    name = path.removeprefix(f"/{repo}/resolve/{sha}/")
                    if name != path and (folder / name).is_file():
                        data = (folder / name).read_bytes()
                        tag = hashlib.sha1(data).hexdigest()
                        return self._send(200, data, {"X-Repo-Commit": sha, "ETag": f'"{tag}"'})
                self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
