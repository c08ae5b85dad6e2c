"""Where the checkout is, and the shared folder beside it: standard library only, so the code that
runs in a bare image build (the PyTorch backend's, docker/stand-in/) imports it without the rest."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_DIR = PROJECT_ROOT.parent / "shared"  # data and vendored sources, beside the checkout
