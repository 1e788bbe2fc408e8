"""Session-wide test settings.

* Thread counts: every process a test starts inherits OMP/MKL = 1 from here, whatever the
  caller's shell set (tiny models are much slower with threads competing for 2 cores).
* ``real_model``: the opt-in real chat model's path (FEEDALIGN_REAL_MODEL), or a skip.
* Timeouts of subprocess tests: ``timeouts.subprocess_timeout(base)`` scales a timeout that is
  generous on an idle machine by the load measured when the session starts (the 1-minute load
  average per CPU core, at least 2x, at most 15x): a busy shared machine slows launches down
  without making them wrong.
"""

from __future__ import annotations

import os

import pytest

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _load_factor() -> float:
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return 4.0
    cores = os.cpu_count() or 1
    return min(15.0, max(2.0, 1.0 + load / cores))


LOAD_FACTOR = _load_factor()
os.environ.setdefault("FEEDALIGN_TEST_LOAD_FACTOR", f"{LOAD_FACTOR:.2f}")


def pytest_report_header(config):  # noqa: ANN001, ANN201 - pytest hook
    return f"subprocess timeouts scaled x{float(os.environ['FEEDALIGN_TEST_LOAD_FACTOR']):.2f} (load at start)"


@pytest.fixture(scope="module")
def real_model(request):
    """The real chat model's path (opt-in: ``FEEDALIGN_REAL_MODEL=<.gguf or dir> python -m
    pytest -m real_model``); skips otherwise."""
    path = os.environ.get("FEEDALIGN_REAL_MODEL")
    if "real_model" not in (request.config.getoption("markexpr") or "") or not path:
        pytest.skip("opt-in: FEEDALIGN_REAL_MODEL=<.gguf or dir> python -m pytest -m real_model")
    return path
