import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "benchmarks" / "data"
"""The measured data the project is fitted and tested on (calibration start-ups and their logs, device
and public logs), in the repository so that a clone runs every test; calibration/SOURCES.md says
where each file came from."""
sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def shared_dir(data_dir: Path) -> Path:
    """The old name of data_dir: its calibration/ holds what ../shared/calibration/ held, by the same names."""
    return data_dir
