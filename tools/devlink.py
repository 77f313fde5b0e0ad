"""Point the development install at the working tree, module for module.

``pip install -e . --config-settings editable_mode=strict`` builds a tree of
links under ``build/`` that installs ``engine/``, ``storage/`` and ``replay/``
as ``sagalog.engine`` & co. It links file by file, so a module added later is
missing until the next install. This script turns the layer folders into
directory links (new modules appear at once) and re-links the top level of
``sagalog/``. It is idempotent and takes milliseconds.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"engine": ROOT / "engine", "storage": ROOT / "storage", "replay": ROOT / "replay"}


def relink(link: Path, target: Path) -> None:
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(target, target_is_directory=target.is_dir())


def main() -> int:
    trees = glob.glob(str(ROOT / "build" / "__editable__.sagalog-*" / "sagalog"))
    if not trees:
        print("devlink: no strict editable install under build/; run `make dev`", file=sys.stderr)
        return 1
    package = Path(trees[0])
    wanted = {name: path for name, path in LAYERS.items()}
    for entry in (ROOT / "sagalog").iterdir():
        if entry.name != "__pycache__":
            wanted[entry.name] = entry
    for existing in package.iterdir():
        if existing.name not in wanted and existing.name != "__pycache__":
            if existing.is_dir() and not existing.is_symlink():
                shutil.rmtree(existing)
            else:
                existing.unlink()
    for name, target in wanted.items():
        relink(package / name, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
