"""``python -m stdet COMMAND ...``: runs :func:`stdet.cli.main`.

Run from a folder that holds a plain ``stdet/`` folder (no ``__init__.py``: a user's output
folder named stdet), Python takes that folder for the package when stdet is an editable install
(its finder comes after the current directory): ``stdet`` is then an empty namespace package whose
``__init__`` never ran. :func:`_unshadow` detects that and loads the real package in its place.
"""
import importlib.util
import os
import sys
from pathlib import Path


def _is_shadowed(package) -> bool:
    """Whether ``package`` is a namespace package (no ``__file__``), not this folder's package."""
    return package is not None and getattr(package, "__file__", None) is None


def _drop_shadowing_paths(package_name: str, real: Path) -> None:
    """Remove the ``sys.path`` entries whose ``stdet/`` folder is not the real package, so that
    processes started with this ``sys.path`` (spawned DataLoader workers) import the real one."""
    def shadows(entry: str) -> bool:
        folder = Path(entry or os.getcwd()) / package_name
        return folder.is_dir() and folder.resolve() != real and not (folder / "__init__.py").exists()

    sys.path[:] = [entry for entry in sys.path if not shadows(entry)]


def _unshadow() -> None:
    """Replace a namespace ``stdet`` (a plain ``./stdet`` folder) by the package of this file."""
    name = __spec__.parent if __spec__ is not None else "stdet"
    if not _is_shadowed(sys.modules.get(name)):
        return
    real = Path(__file__).resolve().parent
    _drop_shadowing_paths(name, real)
    spec = importlib.util.spec_from_file_location(name, real / "__init__.py",
                                                  submodule_search_locations=[str(real)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_unshadow()

from .cli import main  # noqa: E402  (after _unshadow: the real package's cli)

sys.exit(main())
