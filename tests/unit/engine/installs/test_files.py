"""engine/installs/files.py: which listed files are downloaded (`select_files`) and which listings are refused
before any download (`check_listing`)."""

from __future__ import annotations

import pytest

from modelbay.config import Settings
from modelbay.engine.catalog.sources.base import RemoteFile, RemoteModel
from modelbay.engine.errors import RemoteCodeRequired, UnsafeRepoFile, UnsafeWeights
from modelbay.engine.installs.files import check_listing, select_files

CONFIGS = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


def _listing(*paths: str) -> RemoteModel:
    return RemoteModel("huggingface", "acme/model", "0" * 40, tuple(RemoteFile(p, 1) for p in paths))


def _chosen(settings: Settings, *paths: str, needs_remote_code: bool = False) -> list[str]:
    return [f.path for f in select_files(_listing(*paths), settings, needs_remote_code=needs_remote_code)]


def test_safetensors_and_configs_are_chosen_and_other_frameworks_copies_left(settings: Settings) -> None:
    listed = ("model.safetensors", *CONFIGS, "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack",
              "onnx/model.onnx", "model.gguf", "README.md", ".gitattributes", ".github/workflow.yml", "docs/x.md")
    assert _chosen(settings, *listed) == ["model.safetensors", *CONFIGS, "README.md", "docs/x.md"]


def test_pickle_weights_alone_are_refused_unless_allowed(settings: Settings) -> None:
    with pytest.raises(UnsafeWeights) as refused:
        _chosen(settings, "pytorch_model.bin", *CONFIGS)
    assert refused.value.files == ["pytorch_model.bin"]
    # A stray safetensors file beside them is not the model's weights: the pickles are still all there is.
    with pytest.raises(UnsafeWeights):
        _chosen(settings, "pytorch_model.bin", "training_args.safetensors", *CONFIGS)
    settings.allow_pickle = True
    assert _chosen(settings, "pytorch_model.bin", *CONFIGS) == ["pytorch_model.bin", *CONFIGS]


def test_remote_code_is_refused_unless_trusted_and_its_files_skipped_otherwise(settings: Settings) -> None:
    with pytest.raises(RemoteCodeRequired):
        _chosen(settings, "model.safetensors", "modeling_x.py", *CONFIGS)
    with pytest.raises(RemoteCodeRequired):
        _chosen(settings, "model.safetensors", *CONFIGS, needs_remote_code=True)
    # Python files that are not the model's code (a script in a folder) are skipped, not a reason to refuse.
    assert _chosen(settings, "model.safetensors", "scripts/convert.py", "setup.py") == ["model.safetensors"]
    settings.trust_remote_code = True
    assert _chosen(settings, "model.safetensors", "modeling_x.py") == ["model.safetensors", "modeling_x.py"]


@pytest.mark.parametrize(("paths", "path", "reason"), [
    (("a.json", "A.JSON"), "A.JSON", "it is listed twice (perhaps in another case)"),
    (("extra", "extra/inner.txt"), "extra", "it is both a file and a folder of other listed files"),
    (("docs/a", "docs/a/b/c.md"), "docs/a", "it is both a file and a folder of other listed files"),
    (("ok.json", "../escape.json"), "../escape.json", None),
    (("/etc/passwd",), "/etc/passwd", None),
])
def test_a_listing_that_cannot_be_stored_is_refused_naming_the_file(paths: tuple[str, ...], path: str,
                                                                    reason: str | None) -> None:
    with pytest.raises(UnsafeRepoFile) as refused:
        check_listing(_listing(*paths))
    assert refused.value.path == path and "\n" not in str(refused.value)
    assert reason is None or refused.value.reason == reason


def test_a_path_listed_twice_is_refused() -> None:
    listed = RemoteModel("huggingface", "odd/twice", "0" * 40, (RemoteFile("a.json", 1), RemoteFile("a.json", 2)))
    with pytest.raises(UnsafeRepoFile, match=r"it is listed twice"):
        check_listing(listed)


def test_a_listing_of_nested_folders_and_dotted_names_passes() -> None:
    check_listing(_listing("model.safetensors", "docs/a/b.md", "docs/a/c.md", "docs/thanks...md", "a..b.txt"))
