"""Where TEAL calibrations live: beside the converted model, in the tealtab cache, or in the package.

A calibration is keyed by the model (its folder), the corpus (a hash of its
files) and sparsity.VERSION, so changing the ``sparsity`` setting only reads
a small JSON file. The built-in model's calibration on the default corpus
ships in the package (engine/calibrations/), made by ``tealtab calibrate``;
it serves wherever no calibration of this machine's own exists.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from tealtab.engine import sparsity

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).with_name("calibrations")
_SHIPPED_NAMES = {"builtin:gemma-3-270m": "gemma-3-270m.json"}


def shipped_calibration_path(model: str) -> Path | None:
    """The calibration shipped in the package for ``model`` (a built-in model), if any."""
    name = _SHIPPED_NAMES.get(model)
    path = SHIPPED / name if name else None
    return path if path is not None and path.is_file() else None


def _model_folder(backend) -> Path:
    from tealtab.engine.loading import cache_dir

    directory = getattr(backend, "directory", None)
    cache = cache_dir()
    if directory is not None:
        directory = Path(directory).resolve()
        if cache.resolve() in directory.parents:  # a converted model: beside it
            return directory / "sparsity"
        ident = str(directory)
    else:
        ident = backend.name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", backend.name).strip("-")[:60]
    return cache / "sparsity" / f"{slug}-{hashlib.sha1(ident.encode()).hexdigest()[:8]}"


def calibration_path(backend, corpus: Path | None, key: str) -> Path:
    """The file a calibration of ``backend`` on ``corpus`` (files hashed to ``key``) is saved in."""
    label = "stdlib" if corpus is None else re.sub(r"[^A-Za-z0-9._-]+", "-", Path(corpus).name)[:40] or "corpus"
    return _model_folder(backend) / f"{label}-{key}-v{sparsity.VERSION}.json"


def find_calibration(backend, corpus: Path | None = None) -> sparsity.Calibration | None:
    """The calibration of ``backend``'s model on ``corpus`` (default: the standard-library corpus):
    this machine's own if saved, else the package's for a built-in model; None if neither exists."""
    from tealtab.engine.calibration import corpus_files, corpus_key

    try:
        path = calibration_path(backend, corpus, corpus_key(corpus_files(corpus)))
    except (OSError, ValueError) as exc:
        log.warning("calibration corpus unreadable: %s", exc)
        return None
    candidates = [path]
    if corpus is None and (shipped := shipped_calibration_path(backend.name)) is not None:
        candidates.append(shipped)
    for candidate in candidates:
        if candidate.is_file():
            try:
                cal = sparsity.Calibration.load(candidate)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("ignoring unreadable calibration %s: %s", candidate, exc)
                continue
            if cal.version == sparsity.VERSION:
                return cal
    return None
