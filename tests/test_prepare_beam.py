"""Data preparation on Apache Beam (--runner beam): the dataset the local pool writes.

Needs the [beam] extra (pip install -e '.[beam]'): apache-beam pins protobuf < 7, Pillow < 13
and pyarrow < 26, below what the rest of vidtx installs, so it is not part of [test] and these
tests skip where it is missing.
"""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("apache_beam", reason="Apache Beam is not installed (the [beam] extra: "
                    "pip install -e '.[beam]'); --runner beam is untested here")

from configs import common  # noqa: E402
from test_prepare import BROKEN, GOOD, prepare_ucf, prepared, shard_bytes, ucf_tree  # noqa: E402,F401
from vidtx.data import format as data_format  # noqa: E402
from vidtx.data import pipeline, prepare, prepare_beam  # noqa: E402
from vidtx.errors import VidtxError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Several worker processes, each with its own bundles: what a cluster runner does.
MULTI_PROCESS = "--direct_num_workers=2 --direct_running_mode=multi_processing"
# Two workers in this process: cheaper to start, for the kill test.
MULTI_THREAD = "--direct_num_workers=2 --direct_running_mode=multi_threading"
# May differ between two preparations of the same videos and settings.
HOW_AND_WHEN = ("created", "seconds", "command", "runner", "workers")


def same_dataset(a, b, *, ignore=()):
  """Shards, frame indexes, report and label map byte for byte; prepare_info.json but for
  HOW_AND_WHEN and `ignore`."""
  assert shard_bytes(a) == shard_bytes(b)
  for name in (prepare.REPORT_FILE, data_format.LABEL_MAP_FILE):
    assert open(os.path.join(a, name)).read() == open(os.path.join(b, name)).read()
  info_a, info_b = data_format.read_prepare_info(a), data_format.read_prepare_info(b)
  ignore = HOW_AND_WHEN + tuple(ignore)
  assert {k: v for k, v in info_a.items() if k not in ignore} == {
      k: v for k, v in info_b.items() if k not in ignore}


def test_beam_writes_the_dataset_the_local_pool_writes(prepared, ucf_tree, tmp_path):
  out = str(tmp_path / "beam")
  info = prepare_ucf(ucf_tree, out, runner="beam", beam_options=MULTI_PROCESS)
  same_dataset(prepared[0], out)
  assert info["runner"] == "beam" and prepared[1]["runner"] == "local"
  assert info["failed"] == len(BROKEN) and not os.path.exists(os.path.join(out, prepare.WORK_DIR))
  # Training reads it.
  data = common.data_config(dir=out, num_frames=4, image_size=32, scale_jitter=(32, 40),
                            eval_short_side=32, shuffle_buffer=4)
  batch = next(pipeline.make_train_dataset(data, batch_size=2, seed=0).as_numpy_iterator())
  assert batch["video"].shape == (2, 4, 32, 32, 3)
  # Prepared already, whichever runner made it.
  assert prepare_ucf(ucf_tree, out) == info


def test_beam_options_beam_does_not_know_are_one_clear_error():
  with pytest.raises(VidtxError, match="does not know.*no_such_option"):
    prepare_beam.pipeline_options("--runner=DirectRunner --no_such_option=3")
  with pytest.raises(VidtxError, match="beam_options are for runner 'beam'"):
    prepare.Settings(beam_options="--runner=FlinkRunner").check()


def test_a_video_that_killed_two_attempts_is_reported(tmp_path):
  journal = prepare._AttemptJournal(str(tmp_path), "train", 3)
  journal.start("/v/crash.avi")  # the worker dies here ...
  assert prepare._AttemptJournal(str(tmp_path), "train", 3).blamed() == {}  # ... once: a preemption?
  again = prepare._AttemptJournal(str(tmp_path), "train", 3)
  again.start("/v/crash.avi")  # ... and again
  blamed = prepare._AttemptJournal(str(tmp_path), "train", 3).blamed()
  assert list(blamed) == ["/v/crash.avi"] and "died 2 times" in blamed["/v/crash.avi"]


def prep_command(ucf_tree, out, delay):
  """data_prep/ucf101.py --runner beam, each video `delay` s slower (a kill lands mid-run)."""
  videos, annotations = ucf_tree
  patch = (f"import time; from vidtx.data import decode; real = decode.decode_video; "
           f"decode.decode_video = lambda *a, **k: time.sleep({delay}) or real(*a, **k); "
           "from data_prep import ucf101; from vidtx import cli; cli.run(ucf101.main)")
  return [sys.executable, "-c", patch, "--videos", videos, "--annotations", annotations,
          "--out", out, "--short_side", "32", "--videos_per_shard", "1", "--runner", "beam",
          "--beam_options", MULTI_THREAD]


@pytest.mark.slow
def test_a_killed_beam_run_resumes_to_the_same_dataset(prepared, ucf_tree, tmp_path):
  out = str(tmp_path / "killed")
  work = os.path.join(out, prepare.WORK_DIR)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
  run = subprocess.Popen(prep_command(ucf_tree, out, delay=1.0), cwd=REPO, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
  markers = lambda: [n for n in os.listdir(work) if re.fullmatch(r"\w+-\d{5}\.json", n)] \
      if os.path.isdir(work) else []
  deadline = time.monotonic() + 240
  while len(markers()) < 2 and run.poll() is None and time.monotonic() < deadline:
    time.sleep(0.1)
  os.killpg(run.pid, signal.SIGKILL)  # the driver and every Beam worker, mid-shard
  run.wait()
  done = len(markers())
  total = len(GOOD) + len(BROKEN) - 1  # the missing video is in no shard
  assert 2 <= done < total, done
  assert not data_format.is_prepared(out)
  assert not any(".tfrecord-" in n for n in os.listdir(out))  # nothing visible as a shard
  resumed = subprocess.run(prep_command(ucf_tree, out, delay=0), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr
  found = re.search(r"resuming: (\d+) of (\d+) shards are already done", resumed.stdout)
  assert found and int(found.group(1)) >= done and int(found.group(2)) == total, resumed.stdout
  same_dataset(prepared[0], out, ignore=["details"])  # the script records its flags there
  leftovers = [n for _, _, names in os.walk(out) for n in names if ".tmp" in n]
  assert not leftovers and not os.path.exists(work)
