"""``feedalign serve`` as a process: starts on 127.0.0.1, answers, stops on Ctrl+C; bad input
gives one line and exit code 2."""

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from feedalign.cli.main import main


def _items(tmp_path, rows):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_serve_process_answers_and_stops(tmp_path):
    items = _items(tmp_path, [{"prompt": "q", "completions": ["a", "b"]}, {"prompt": "r", "completion": "c"}])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "feedalign", "serve", "--db", str(tmp_path / "fb.db"),
                             "--items", str(items), "--port", "0", "--objectives", "helpful"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert "2 items (2 new)" in lines[0], lines
        url = lines[1].split("serving on ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        nxt = json.loads(urllib.request.urlopen(url + "api/next?annotator=z", timeout=60).read())
        assert nxt["item"]["prompt"] == "q" and nxt["progress"] == {"done": 0, "total": 2}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_serve_bad_input_one_line_exit_2(tmp_path, capsys):
    assert main(["serve", "--db", str(tmp_path / "x.db"), "--host", "0.0.0.0"]) == 2
    assert "token" in capsys.readouterr().err
    bad = _items(tmp_path, [{"prompt": "q", "completions": ["a"]}])
    assert main(["serve", "--db", str(tmp_path / "x.db"), "--items", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "items.jsonl:1: field 'completions'" in err
    assert main(["serve", "--db", str(tmp_path / "x.db"), "--model", str(tmp_path)]) == 2
    assert "--prompts" in capsys.readouterr().err
