"""python -m emotion_triton.repository --repository DIR: writes the repository's derived configs (the
classifier's CPU variants, the ensemble's pins of the served version) before a server starts on it.
The build container runs it (docker/build-entrypoint.sh); the local server and every build do it themselves."""

from dataclasses import dataclass
from pathlib import Path

from ..command_line import parse
from . import DEFAULT_REPOSITORY, Ensemble


@dataclass
class DeriveOptions:
    repository: Path = DEFAULT_REPOSITORY
    """the model repository"""


ensemble = Ensemble.read(parse(DeriveOptions, None, __doc__.splitlines()[0]).repository)
for path in ensemble.write_derived_configs():
    print(f"derived {path.relative_to(ensemble.repository)}")
