import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "benchmarks" / "data"
"""The measured data the project is fitted and tested on (calibration start-ups and their logs, device
and public logs), in the repository so that a clone runs every test; calibration/SOURCES.md says
where each file came from."""
sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session", autouse=True)
def _private_config_home(tmp_path_factory: pytest.TempPathFactory):
    """Plans read a calibration overlay from the user's config folder when one is there: tests (and the
    processes they start) plan with an empty config folder of their own, not with the user's overlay."""
    old = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config-home"))
    yield
    if old is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = old


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def shared_dir(data_dir: Path) -> Path:
    """The old name of data_dir: its calibration/ holds what ../shared/calibration/ held, by the same names."""
    return data_dir
