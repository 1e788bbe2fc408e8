"""Real subprocesses: SIGTERM / SIGINT save and stop (then --resume is bit-identical to an
uninterrupted run), and one run per output_dir (a second run fails at once naming the holder)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from timeouts import subprocess_timeout
from trainer_fixtures import assert_states_equal, base_config, final_state, labeled_rows, pair_rows, save_tiny_model, write_jsonl

from feedalign.config import ConfigError
from feedalign.trainers import train
from feedalign.trainers.lock import LOCK_FILE, OutputDirLock

STEPS = 40
WAIT_S = subprocess_timeout(120)  # scaled by the load at the start of the session


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    data = [
        {"path": str(write_jsonl(root / "pairs.jsonl", pair_rows(12, seed=1))), "loss": "dpo"},
        {"path": str(write_jsonl(root / "thumbs.jsonl", labeled_rows(12, seed=2))), "loss": "bco"},
    ]
    cfg = base_config(save_tiny_model(root / "model"), root / "reference", data, max_steps=STEPS, save_every=15,
                      keep_checkpoints=0, log_every=1)
    train(cfg)  # the uninterrupted run, in this process (single-threaded, like the subprocesses)
    return {"root": root, "cfg": cfg, "reference": final_state(root / "reference")}


def _environ() -> dict[str, str]:
    # The test, not the caller, fixes the thread counts of the processes it starts.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "feedalign", *args], env=_environ(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _write_cfg(env, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    cfg = {**env["cfg"], "train": {**env["cfg"]["train"], "output_dir": str(out)}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, out


def _logged_steps(out: Path) -> list[int]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):
            pass  # a line being written
    return steps


def _wait_for_step(proc: subprocess.Popen, out: Path, step: int) -> int:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and proc.poll() is None:
        steps = _logged_steps(out)
        if steps and max(steps) >= step:
            return max(steps)
        time.sleep(0.01)
    raise AssertionError(f"no step {step} logged (exit code {proc.poll()})")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_names_the_resume_command_and_resumes_bit_identically(env, tmp_path, signum):
    cfg_path, out = _write_cfg(env, tmp_path)
    proc = _start(["train", str(cfg_path), "--quiet"])
    seen = _wait_for_step(proc, out, 3)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 128 + signum, err
    line = err.strip().splitlines()[-1]
    stopped = max(_logged_steps(out))
    assert stopped < STEPS, "training ended before the signal; raise STEPS"
    assert stopped >= seen  # at most the step in flight is lost
    checkpoint = out / f"step-{stopped:08d}"
    assert checkpoint.is_dir() and not (out / "final").exists()
    assert f"interrupted by {signal.Signals(signum).name} after step {stopped}" in line
    assert str(checkpoint) in line and f"resume with: feedalign train {cfg_path} --resume" in line
    assert not (out / LOCK_FILE).exists()
    resumed = _start(["train", str(cfg_path), "--resume", "--quiet"])
    stdout, err = resumed.communicate(timeout=WAIT_S)
    assert resumed.returncode == 0, err
    assert f"trained {STEPS} steps (resumed at step {stopped})" in stdout
    assert_states_equal(final_state(out), env["reference"])


def test_a_second_run_on_the_same_output_dir_fails_at_once_naming_the_holder(env, tmp_path):
    cfg_path, out = _write_cfg(env, tmp_path)
    # Long enough to still be running whatever the machine's speed; stopped by the test.
    first = _start(["train", str(cfg_path), "--quiet", "--set", "train.max_steps=1000000"])
    try:
        _wait_for_step(first, out, 1)
        second = _start(["train", str(cfg_path), "--quiet"])
        _, err = second.communicate(timeout=WAIT_S)
        assert second.returncode == 2
        assert len(err.strip().splitlines()) == 1
        assert f"pid {first.pid}" in err and "in use by another run" in err and LOCK_FILE in err
        assert first.poll() is None  # the first run is untouched
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=WAIT_S)
    assert first.returncode == 143


def test_a_stale_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from feedalign.trainers.lock import OutputDirLock; "
         "lock = OutputDirLock(sys.argv[1]); lock.acquire(); print('locked', flush=True); time.sleep(600)",
         str(tmp_path)],
        env=_environ(), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"pid {holder.pid} on host"):
            OutputDirLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.communicate(timeout=WAIT_S)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid  # left behind by the kill
    with OutputDirLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()


def test_sigterm_while_loading_is_one_line_and_exit_143(env, tmp_path):
    cfg_path, out = _write_cfg(env, tmp_path)
    # Far more steps than the run can finish before the signal lands, even when this process
    # reads the child's log late on a busy machine: the signal never meets the last step.
    proc = _start(["train", str(cfg_path), "train.max_steps=100000", "train.save_every=0"])
    lines = []
    for line in proc.stderr:  # not --quiet: the loading lines tell where it is
        lines.append(line)
        if "source dpo:" in line:  # data loaded, model not yet trained
            proc.send_signal(signal.SIGTERM)
            break
    _, rest = proc.communicate(timeout=WAIT_S)
    last = (lines + rest.splitlines())[-1]
    assert proc.returncode == 143, rest
    assert "SIGTERM" in last  # before the loop: "terminated by SIGTERM ..."; in it: "interrupted by SIGTERM ..."
    assert "Traceback" not in rest and not (out / LOCK_FILE).exists()


def test_a_sigterm_that_lands_while_a_log_line_is_written_still_stops_the_run(monkeypatch):
    """tqdm's logging redirect catches everything but KeyboardInterrupt and SystemExit around
    its write; a SIGTERM raised there (Terminated) must get through, not become a logging error."""
    import logging

    from tqdm.contrib.logging import logging_redirect_tqdm
    from tqdm.std import tqdm as tqdm_class

    from feedalign.trainers.signals import Terminated

    def write(*args, **kwargs):
        raise Terminated(signal.SIGTERM)

    monkeypatch.setattr(tqdm_class, "write", staticmethod(write))
    log = logging.getLogger("feedalign.train.test_signal")
    log.propagate, log.level = False, logging.INFO
    handler = logging.StreamHandler()
    log.addHandler(handler)  # replaced by tqdm's handler inside the redirect
    try:
        with pytest.raises(Terminated) as caught, logging_redirect_tqdm(loggers=[log]):
            log.info("source dpo: loading")
    finally:
        log.removeHandler(handler)
    assert caught.value.exit_code == 143 and str(caught.value) == "SIGTERM"
