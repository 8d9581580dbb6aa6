"""The data_prep scripts and the `python -m vidtx.data...` tools as a user runs them."""
import os
import subprocess
import sys

import pytest

import cli_runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, cwd=None):
  """`python ARGS...`: in this process (cli_runner), or in a new one started in `cwd`."""
  if cwd is None:
    return cli_runner.run_main(*args)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=300)


@pytest.mark.parametrize("args, words", [
    (["data_prep/ucf101.py", "--videos", "/nonexistent/v", "--annotations", "/nonexistent/a",
      "--out", "/tmp/never"], "annotations directory /nonexistent/a does not exist"),
    (["-m", "data_prep.folder", "--videos", "/nonexistent/v", "--out", "/tmp/never"],
     "video folder /nonexistent/v does not exist"),
    (["data_prep/kinetics.py", "--videos", "/tmp", "--out", "/tmp/never"], "either official CSVs"),
    (["-m", "data_prep.ucf101", "--videos", "/tmp"], "missing required flag(s): --annotations, --out"),
    (["-m", "vidtx.data.info"], "give one prepared dataset directory"),
    (["-m", "vidtx.data.info", "/nonexistent/data"], "dataset directory /nonexistent/data does not exist"),
    (["-m", "vidtx.data.bench", "--steps", "2"], "missing required flag(s): --data_dir"),
    (["-m", "vidtx.data.bench_sources", "--like", "ucf101", "--out", "/tmp/never", "--videos", "0"],
     "need --videos >= 1"),
    (["-m", "vidtx.data.bench_sources", "--like", "hmdb", "--out", "/tmp/never"], "--like"),
])
def test_bad_input_is_one_line_and_exit_1(args, words):
  result = run(*args)
  assert result.returncode == 1, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr
  assert not os.path.exists("/tmp/never")


def test_synthetic_script_prepares_and_info_shows_it(tmp_path):
  raw, data = str(tmp_path / "raw"), str(tmp_path / "data")
  script = os.path.join(REPO, "data_prep", "synthetic.py")  # run as a file from elsewhere
  result = run(script, "--out", raw, "--num_classes", "2", "--videos_per_class", "3", "--size", "32",
               "--num_frames", "8", "--prepare", data, "--workers", "1", cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr
  assert "prepared" in result.stdout
  result = run("-m", "vidtx.data.info", data)
  assert result.returncode == 0, result.stderr
  assert "synthetic motion dataset" in result.stdout
  assert "MoveLeft, MoveRight" in result.stdout
  assert [line.split()[:2] for line in result.stdout.splitlines() if line.startswith("    ")] == [
      ["test", "2"], ["train", "4"]]
