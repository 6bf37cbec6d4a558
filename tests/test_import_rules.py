"""The import rules of ARCHITECTURE.md ("Who may import whom"), checked on every module's imports
(module level and inside functions) as written in the source."""
import ast
import os

import pytest

from tests.helpers import REPO

PACKAGE = "wavllm_fairseq"

FORBIDDEN = {
    "wavllm_fairseq.data": ("wavllm_fairseq.models", "wavllm_fairseq.text"),
    "wavllm_fairseq.text": ("wavllm_fairseq.models.wavllm", "wavllm_fairseq.models.llama",
                            "wavllm_fairseq.models.whisper", "wavllm_fairseq.models.wavlm"),
    "wavllm_fairseq.models.common": ("wavllm_fairseq.models.wavllm", "wavllm_fairseq.models.llama",
                                     "wavllm_fairseq.models.whisper", "wavllm_fairseq.models.wavlm"),
    "wavllm_fairseq.models.whisper": ("wavllm_fairseq.models.wavllm", "wavllm_fairseq.models.llama",
                                      "wavllm_fairseq.models.wavlm"),
    "wavllm_fairseq.models.wavlm": ("wavllm_fairseq.models.wavllm", "wavllm_fairseq.models.llama",
                                    "wavllm_fairseq.models.whisper"),
    "wavllm_fairseq.models.llama": ("wavllm_fairseq.models.wavllm", "wavllm_fairseq.models.whisper",
                                    "wavllm_fairseq.models.wavlm"),
    "wavllm_fairseq.tasks": ("wavllm_fairseq.models",),
}
"""Module prefix -> the prefixes its modules must not import."""


def modules(root=REPO):
    """(module name, source path) of every module of the package under ``root``."""
    for folder, _, files in os.walk(os.path.join(root, PACKAGE)):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, root)[:-3].split(os.sep)
                yield ".".join(parts[:-1] if name == "__init__.py" else parts), path


def imported(module: str, path: str):
    """Absolute names of the package's modules that ``module`` imports."""
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(root=REPO):
    found = []
    for module, path in modules(root):
        for owner, forbidden in FORBIDDEN.items():
            if within(module, owner):
                found += [f"{module} imports {name}" for name in set(imported(module, path))
                          if any(within(name, f) for f in forbidden)]
    return sorted(found)


def test_every_module_keeps_the_import_rules():
    assert violations() == []


def test_the_check_sees_relative_imports_inside_functions(tmp_path):
    """A rule broken the way it would be (a relative import inside a function) is caught."""
    folder = tmp_path / PACKAGE / "data"
    folder.mkdir(parents=True)
    (folder / "sneaky.py").write_text("def f():\n    from ..models.wavllm.encoder_cache import audio_identity\n")
    assert violations(str(tmp_path)) == ["wavllm_fairseq.data.sneaky imports wavllm_fairseq.models.wavllm.encoder_cache",
                            "wavllm_fairseq.data.sneaky imports wavllm_fairseq.models.wavllm.encoder_cache.audio_identity"]


@pytest.mark.parametrize("owner", sorted(FORBIDDEN))
def test_every_ruled_package_exists(owner):
    assert any(within(module, owner) for module, _ in modules()), owner
