"""A model source from a plugin: models kept in a dict, found by ModelBay's search like the hub's.

Run it with `python examples/model_source.py`. A source is a `ModelSource` subclass with a `name` and three
methods: `search`, `info` (one model at a commit, with its files) and `fetch_file` (copy one file, counting
bytes); `has` (optional) claims repo ids, so that `/models install acme/tiny-chat` installs from it. A plugin
registers it through the `register_sources` hook; packaged, it is found by its entry point:

    [project.entry-points.modelbay]
    dict_source = "my_package.model_source"
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from modelbay import plugins
from modelbay.config import load_settings
from modelbay.engine.catalog.sources import ModelSource, RemoteFile, RemoteModel
from modelbay.engine.catalog.sources.transfer import ByteMeter
from modelbay.engine.errors import RepoNotFound
from modelbay.hookspecs import hookimpl
from modelbay.runtime import Runtime

# repo id -> what the source knows of it: its tags and its files' bytes.
MODELS = {
    "acme/tiny-chat": {"tags": ("chat",), "files": {"config.json": b'{"model_type": "llama"}', "README.md": b"Hi."}},
    "acme/tiny-coder": {"tags": ("code",), "files": {"config.json": b'{"model_type": "qwen2"}'}},
}


class DictSource(ModelSource):
    """Models held in memory, at one commit each."""

    name = "dict"

    def search(self, text: str, *, category: str | None = None, limit: int = 20) -> list[RemoteModel]:
        """Every model whose repo id holds each word of text."""
        words = text.lower().split()
        return [self.info(repo) for repo in MODELS if all(w in repo for w in words)][:limit]

    def info(self, repo_id: str, revision: str | None = None) -> RemoteModel:
        """One model with its files; its commit is the hash of its files."""
        if repo_id not in MODELS:
            raise RepoNotFound(repo_id)
        files = MODELS[repo_id]["files"]
        sha = hashlib.sha1(b"".join(files.values())).hexdigest()
        return RemoteModel(self.name, repo_id, sha, tuple(RemoteFile(p, len(b)) for p, b in files.items()),
                           author=repo_id.split("/")[0], tags=MODELS[repo_id]["tags"], pipeline_tag="text-generation")

    def has(self, repo_id: str) -> bool:
        """Whether this source holds repo_id: an install of it comes from here, not from the hub."""
        return repo_id in MODELS

    def fetch_file(self, model: RemoteModel, file: RemoteFile, dest: Path, meter: ByteMeter) -> str | None:
        """Write the file's bytes to dest and return their sha256."""
        data = MODELS[model.repo_id]["files"][file.path]
        dest.write_bytes(data)
        meter.add(file.path, len(data))
        return hashlib.sha256(data).hexdigest()


class DictSourcePlugin:
    """The plugin: one hook implementation."""

    @hookimpl
    def register_sources(self, register):  # noqa: ANN001, ANN201 - the hook's signature is in modelbay.hookspecs
        register(DictSource)


def main() -> None:
    plugins.register(DictSourcePlugin())  # an installed package would be found through its entry point instead
    with tempfile.TemporaryDirectory() as home:
        runtime = Runtime(load_settings(home=Path(home)))
        runtime.prepare()  # an SQLite database with the shipped catalog
        try:
            hits, notices = runtime.discovery.search("tiny", source="dict")
            for hit in hits:
                print(f"{hit.name}  source={hit.source}  category={hit.category}  size={hit.size_bytes} B")
            model = DictSource(runtime.settings).info("acme/tiny-chat")
            print(f"{model.repo_id}@{model.sha[:7]}: {', '.join(f.path for f in model.files)}")
            print(f"/models install acme/tiny-chat installs from: {runtime.installs.resolve('acme/tiny-chat').source}")
        finally:
            runtime.close()


if __name__ == "__main__":
    main()
