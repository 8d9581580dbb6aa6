"""The fault suite (docs/reliability.md): a fault injected, then the run either goes on correctly
or stops with one clear line and its progress saved.

  python -m pytest -q tests/test_reliability.py tests/test_multihost.py
"""
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import cli_runner
import data_fixtures
from vidtx import checkpoint as ckpt
from vidtx import evaluate, models, multihost, sharding, trainer, writers
from vidtx.errors import VidtxError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
smoke_config = data_fixtures.smoke_config



run_cli = cli_runner.run_main  # in this process: no second import of JAX and TensorFlow


def not_built(*args, **kwargs):
  raise AssertionError("the model was built before the bad input was reported")


@pytest.fixture(scope="module")
def three_checkpoints(trained):
  """The shared trained smoke run (conftest), with checkpoints at steps 2, 3, 4 and 6: (config, workdir)."""
  config, workdir, _ = trained
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "3", "4", "6"]
  return config, workdir


def resumed(config, data_dir=None, **train):
  """A copy of the shared run's config (on `data_dir`), to resume a copy of its workdir with."""
  config = config.copy_and_resolve_references()
  config.data.dir = data_dir or config.data.dir
  config.train.update(train)
  return config


def copy_of(path, tmp_path, name="copy") -> str:
  target = str(tmp_path / name)
  shutil.copytree(path, target)
  return target


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("key,value", [("batch_size", 0), ("batch_size", -8), ("log_every", 0),
                                       ("checkpoint_every", 0), ("val_every", -1),
                                       ("input_streams", 0)])
def test_bad_numbers_in_config_train_stop_before_the_model(smoke_data_dir, tmp_path, monkeypatch,
                                                           key, value):
  monkeypatch.setattr(models, "build", not_built)
  config = smoke_config(smoke_data_dir, **{key: value})
  with pytest.raises(VidtxError, match=rf"config\.train\.{key}={value} must be"):
    trainer.train_and_evaluate(config, str(tmp_path / "w"))


def test_unknown_config_key_is_one_readable_line(tmp_path):
  result = run_cli("train.py", "--config=configs/demo.py:smoke=True", f"--workdir={tmp_path}",
                   "--config.train.batchsize=16")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      "error: --config.train.batchsize: the config has no key 'batchsize' "
      '(did you mean "batch_size" instead of "batchsize"?)']


# ----------------------------------------------------------------------------- the dataset
def relabel(data_dir: str, names: list[str], files=("label_map.txt", "label.labels.txt")) -> None:
  for name in (f for f in files if f.endswith(".txt")):
    with open(os.path.join(data_dir, name), "w") as f:
      f.write("".join(f"{n}\n" for n in names))
  if "prepare_info.json" in files:
    path = os.path.join(data_dir, "prepare_info.json")
    with open(path) as f:
      info = json.load(f)
    info["class_names"] = names
    with open(path, "w") as f:
      json.dump(info, f)


def test_an_edited_label_map_is_refused(smoke_data_dir, tmp_path, monkeypatch):
  data_dir = copy_of(smoke_data_dir, tmp_path)
  names = open(os.path.join(data_dir, "label_map.txt")).read().split()
  relabel(data_dir, [names[0], names[2], names[1]] + names[3:], files=("label_map.txt",))
  monkeypatch.setattr(models, "build", not_built)
  message = (r"label maps of .* disagree: label_map.txt and label.labels.txt differ \(label 1 is "
             rf"'{names[2]}' in one and '{names[1]}' in the other\)")
  with pytest.raises(VidtxError, match=message):
    trainer.train_and_evaluate(smoke_config(data_dir), str(tmp_path / "w"))
  with pytest.raises(VidtxError, match=message):
    evaluate.test_protocol(smoke_config(data_dir), str(tmp_path / "w"), None)


def test_resume_refuses_a_dataset_with_another_label_map(three_checkpoints, smoke_data_dir, tmp_path):
  config, workdir = three_checkpoints
  data_dir = copy_of(smoke_data_dir, tmp_path, "relabelled")
  names = open(os.path.join(data_dir, "label_map.txt")).read().split()
  relabel(data_dir, ["Other"] + names[1:], files=("label_map.txt", "label.labels.txt",
                                                  "prepare_info.json"))
  workdir = copy_of(workdir, tmp_path)
  with pytest.raises(VidtxError, match=rf"label 0 is 'Other' in the dataset and '{names[0]}' in the "
                                       "checkpoint"):
    trainer.train_and_evaluate(resumed(config, data_dir), workdir)
  # The checkpoint still names its own classes.
  assert ckpt.read_meta(os.path.join(workdir, "checkpoints"))["label_names"] == names


@pytest.mark.parametrize("damage,message", [
    ("missing", r"shard .*vidtx-test.tfrecord-00000-of-00001 of split 'test' is missing \(0 of 1"),
    ("truncated", r"shard .*vidtx-test.tfrecord-00000-of-00001 is truncated "
                  r"\(\d+ bytes, \d+ when prepared\)"),
    ("garbage index", r"frame_index/vidtx-test.tfrecord-00000-of-00001.npz is not a frame index"),
])
def test_a_broken_validation_split_stops_the_run_at_start(smoke_data_dir, tmp_path, monkeypatch,
                                                          damage, message):
  data_dir = copy_of(smoke_data_dir, tmp_path)
  shard = os.path.join(data_dir, "vidtx-test.tfrecord-00000-of-00001")
  if damage == "missing":
    os.remove(shard)
  elif damage == "truncated":
    os.truncate(shard, os.path.getsize(shard) // 2)
  else:
    with open(os.path.join(data_dir, "frame_index", os.path.basename(shard) + ".npz"), "wb") as f:
      f.write(b"\x80\x04garbage, not an index")
  monkeypatch.setattr(models, "build", not_built)
  with pytest.raises(VidtxError, match=message):
    trainer.train_and_evaluate(smoke_config(data_dir), str(tmp_path / "w"))


def test_a_failed_validation_keeps_the_training_progress(smoke_data_dir, tmp_path):
  # Bytes overwritten in place (same size): found only when validation reads them.
  data_dir = copy_of(smoke_data_dir, tmp_path)
  shard = os.path.join(data_dir, "vidtx-test.tfrecord-00000-of-00001")
  size = os.path.getsize(shard)
  with open(shard, "r+b") as f:
    f.seek(size // 4)
    f.write(np.random.RandomState(0).bytes(size // 2))
  workdir = str(tmp_path / "w")
  with pytest.raises(VidtxError, match=r"validation at step 2 failed: .*; training progress is saved "
                                       r"in .*/checkpoints/2$"):
    trainer.train_and_evaluate(smoke_config(data_dir, checkpoint_every=4, val_every=2), workdir)
  assert ocp.utils.checkpoint_steps(os.path.join(workdir, "checkpoints")) == [2]


# ----------------------------------------------------------------------------- checkpoints
def largest_file(directory: str) -> str:
  files = [os.path.join(d, f) for d, _, names in os.walk(directory) for f in names]
  return max(files, key=os.path.getsize)


DAMAGE = {
    "truncated array file": lambda step: os.truncate(largest_file(os.path.join(step, "train")), 7),
    "missing metadata": lambda step: shutil.rmtree(os.path.join(step, "meta")),
    "empty metadata": lambda step: open(os.path.join(step, "meta", "metadata"), "w").close(),
    "missing item": lambda step: shutil.rmtree(os.path.join(step, "variables")),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(three_checkpoints, tmp_path, capsys,
                                                                  damage):
  config, workdir = three_checkpoints
  workdir = copy_of(workdir, tmp_path)
  checkpoints = os.path.join(workdir, "checkpoints")
  DAMAGE[damage](os.path.join(checkpoints, "6"))
  # num_steps=4: the resumed run has nothing left to train (the fallback is what is tested).
  trainer.train_and_evaluate(resumed(config, num_steps=4), workdir)
  out = capsys.readouterr()
  assert f"warning: checkpoint {checkpoints}/6 is damaged (" in out.err
  assert f"moved to {checkpoints}/damaged/6, using the one before" in out.err
  assert f"resumed from {checkpoints}/4" in out.out
  assert "Traceback" not in out.err and sorted(ocp.utils.checkpoint_steps(checkpoints)) == [2, 3, 4]


def test_training_goes_on_from_the_intact_checkpoint(three_checkpoints, tmp_path):
  config, workdir = three_checkpoints
  workdir = copy_of(workdir, tmp_path)
  DAMAGE["truncated array file"](os.path.join(workdir, "checkpoints", "6"))
  trainer.train_and_evaluate(resumed(config), workdir)
  # Steps 5 and 6 again: the same parameters as the first time (checked against the copy kept).
  mesh = sharding.make_mesh(config.mesh)
  _, again, meta = evaluate.restore_model(config, os.path.join(workdir, "checkpoints", "6"), mesh)
  _, first, _ = evaluate.restore_model(config, os.path.join(three_checkpoints[1], "checkpoints", "6"),
                                       mesh)
  assert meta["step"] == 6
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(again), jax.device_get(first))
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  steps = [line["step"] for line in lines]
  assert steps == sorted(set(steps)), "metrics.jsonl repeats steps after the resume"


def test_no_intact_checkpoint_is_one_clear_line(three_checkpoints, tmp_path):
  config, workdir = three_checkpoints
  workdir = copy_of(workdir, tmp_path)
  for step in ("2", "3", "4", "6"):
    DAMAGE["missing metadata"](os.path.join(workdir, "checkpoints", step))
  with pytest.raises(VidtxError, match=r"no checkpoint in .*/checkpoints restores \(newest, step 6: "):
    trainer.train_and_evaluate(resumed(config), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "3", "4", "6"]  # all kept


def tiny_variables(value: float) -> dict:
  return {"params": {"w": np.full((2,), value, np.float32)}, "batch_stats": {}}


def write_best(workdir: str, scores: dict[int, float]) -> str:
  """<workdir>/best with these steps and val_top1 scores (as a kill before the clean-up leaves it)."""
  directory = os.path.join(workdir, "best")
  manager = ckpt._manager(directory, keep=None, best=True)
  for step, score in scores.items():
    manager.save(step, metrics={"val_top1": score}, args=ocp.args.Composite(
        variables=ocp.args.StandardSave(tiny_variables(step)),
        meta=ocp.args.JsonSave({"step": step})))
  manager.wait_until_finished()
  manager.close()
  return directory


def test_eval_takes_the_best_recorded_score_not_the_highest_step(tmp_path, capsys):
  best = write_best(str(tmp_path), {2: 0.8, 4: 0.5})
  assert ckpt.resolve(str(tmp_path)) == (best, 2)
  abstract = ckpt.abstract(tiny_variables(0.0))
  variables, meta = ckpt.restore_variables(str(tmp_path), abstract)
  assert meta["step"] == 2 and float(variables["params"]["w"][0]) == 2.0
  # The best one damaged: the next best, with a warning naming the broken one.
  shutil.rmtree(os.path.join(best, "2", "variables"))
  variables, meta = ckpt.restore_variables(str(tmp_path), abstract)
  assert meta["step"] == 4
  assert f"warning: checkpoint {best}/2 is damaged" in capsys.readouterr().err


@pytest.mark.slow
def test_a_kill_while_deleting_an_old_checkpoint_leaves_no_half_step_listed(tmp_path):
  # Saves steps 1..3 keeping 1; the deletion of an old step is killed (SIGKILL) half-way.
  script = f"""
import os, shutil, signal, sys
import numpy as np
sys.path.insert(0, {REPO!r})
from vidtx import checkpoint as ckpt
real_rmtree = shutil.rmtree
def killed_half_way(path, *args, **kwargs):
  files = sorted(os.path.join(d, f) for d, _, names in os.walk(path) for f in names)
  for f in files[: len(files) // 2]:
    os.remove(f)
  os.kill(os.getpid(), signal.SIGKILL)
checkpoints = ckpt.Checkpoints({str(tmp_path)!r}, keep=1)
for step in (1, 2, 3):
  if step == 3:
    shutil.rmtree = killed_half_way
  variables = {{"params": {{"w": np.full((4,), step, np.float32)}}, "batch_stats": {{}}}}
  checkpoints.save(step, variables, {{"step": np.int32(step)}}, {{"step": step}})
  checkpoints.wait()
"""
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
  assert result.returncode == -9, result.stderr
  directory = os.path.join(tmp_path, "checkpoints")
  steps = ocp.utils.checkpoint_steps(directory)
  assert steps
  for step in steps:  # every step still listed restores
    with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True)) as m:
      restored = m.restore(step, args=ocp.args.Composite(
          variables=ocp.args.StandardRestore(ckpt.abstract(tiny_variables(0.0)))))
    assert float(restored["variables"]["params"]["w"][0]) == step
  ckpt.Checkpoints(str(tmp_path), keep=1).close()  # the next run clears what was left
  assert not os.path.exists(os.path.join(directory, ckpt.DELETING))


# ----------------------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk(tmp_path):
  """A 2 MiB file system (tmpfs) for the workdir (two smoke checkpoints), made bigger by `grow()`;
  skipped unless root."""
  mount = tmp_path / "disk"
  mount.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                    capture_output=True).returncode:
    pytest.skip("cannot mount a tmpfs here (needs root)")

  def grow():
    subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)

  yield str(mount), grow
  subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_stops_with_one_line_and_resumes_once_freed(smoke_data_dir, small_disk, capfd):
  mount, grow = small_disk
  workdir = os.path.join(mount, "w")
  config = smoke_config(smoke_data_dir, num_steps=12, checkpoint_every=2, keep_checkpoints=40,
                        val_every=0, log_every=2)
  with pytest.raises(VidtxError) as failure:
    trainer.train_and_evaluate(config, workdir)
  checkpoints = os.path.join(workdir, "checkpoints")
  good = ocp.utils.checkpoint_steps(checkpoints)
  message = str(failure.value)
  # The disk fills during a save or while the metrics (metrics.jsonl, TensorBoard) are written.
  assert good and re.match(rf"no space left on {re.escape(workdir)}(/checkpoints while saving step "
                           r"\d+| while writing the metrics of step \d+);", message), message
  failed_step = int(re.search(r"step (\d+);", message).group(1))
  assert failed_step > max(good) if "saving" in message else failed_step >= max(good)
  assert message.endswith(f"last good checkpoint: {checkpoints}/{max(good)} (free space, then run "
                          "the same command to resume)")
  assert not [name for name in os.listdir(checkpoints) if "orbax-checkpoint-tmp" in name]
  assert "Traceback" not in capfd.readouterr().err
  assert data_fixtures.open_files_under(workdir) == ["log.txt"]  # the metrics files too are closed
  grow()
  trainer.train_and_evaluate(config, workdir)
  assert max(ocp.utils.checkpoint_steps(checkpoints)) == 12


def test_forget_metrics_after(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  with open(path, "w") as f:
    f.write("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (2, 4, 6)) + '{"step": 8, "lo')
  writers.forget_metrics_after(path, 4)
  assert [json.loads(line)["step"] for line in open(path)] == [2, 4]


def test_no_space_is_recognised_in_orbax_errors():
  assert ckpt.no_space(OSError(errno.ENOSPC, "No space left on device"))
  assert ckpt.no_space(ValueError('RESOURCE_EXHAUSTED: Error writing "a/0" in OCDBT database'))
  assert not ckpt.no_space(ValueError("something else"))


# ----------------------------------------------------------------------------- stop signals
@pytest.mark.slow
def test_sigint_saves_where_it_stopped(smoke_data_dir, tmp_path):
  # (SIGTERM, and resuming bit-identically: test_train.py; on two processes: test_multihost.py.)
  workdir = str(tmp_path / "w")

  def interrupt_after_first_save():
    while not ocp.utils.checkpoint_steps(os.path.join(workdir, "checkpoints")):
      time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGINT)

  threading.Thread(target=interrupt_after_first_save, daemon=True).start()
  with pytest.raises(multihost.Stopped, match=r"stopped by SIGINT after step \d+: checkpoint saved in ") as stop:
    trainer.train_and_evaluate(smoke_config(smoke_data_dir, num_steps=200, checkpoint_every=2,
                                            val_every=0), workdir)
  step = int(str(stop.value).split("after step ")[1].split(":")[0])
  assert stop.value.exit_code == 130 and step < 200
  assert max(ocp.utils.checkpoint_steps(os.path.join(workdir, "checkpoints"))) == step


# ----------------------------------------------------------------------------- the data files
def overwrite_middle(path: str) -> None:
  """Random bytes over the middle third of a file (its size unchanged)."""
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.seek(size // 3)
    f.write(np.random.RandomState(1).bytes(size // 3))


@pytest.mark.slow
def test_a_corrupted_training_shard_ends_the_run_naming_it_with_progress_saved(smoke_data_dir,
                                                                                tmp_path):
  data_dir = copy_of(smoke_data_dir, tmp_path)
  shard = os.path.join(data_dir, "vidtx-train.tfrecord-00000-of-00001")
  workdir = str(tmp_path / "w")
  proc = subprocess.Popen([sys.executable, "train.py", "--config=configs/demo.py:smoke=True",
                           f"--workdir={workdir}", f"--config.data.dir={data_dir}",
                           "--config.train.num_steps=1000", "--config.train.checkpoint_every=2",
                           "--config.train.val_every=0"],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  checkpoints = os.path.join(workdir, "checkpoints")
  while not ocp.utils.checkpoint_steps(checkpoints) and proc.poll() is None:
    time.sleep(0.02)
  overwrite_middle(shard)  # as a failing disk would, under the running job
  corrupted = time.time()
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 1 and time.time() - corrupted < 120, err
  last = err.strip().splitlines()[-1]
  step = max(ocp.utils.checkpoint_steps(checkpoints))
  assert last.startswith("error: training input failed after step ")
  assert f"shard {shard}, record " in last and "is damaged (not a JPEG)" in last
  assert last.endswith(f"progress saved in {checkpoints}/{step}"), last
  assert "Traceback" not in err


def test_decoding_names_symlink_loops_broken_links_and_fifos(tmp_path):
  from vidtx.data import decode, sources  # pylint: disable=g-import-not-at-top
  loop, broken, fifo = tmp_path / "loop.avi", tmp_path / "broken.avi", tmp_path / "fifo.avi"
  os.symlink(loop, loop)
  os.symlink(tmp_path / "gone.avi", broken)
  os.mkfifo(fifo)
  for path, words in [(loop, "a symbolic link loop"), (broken, "a broken symbolic link"),
                      (fifo, "is a FIFO")]:
    with pytest.raises(VidtxError, match=words):
      decode.decode_video(str(path))
  entries, failures = [], []
  sources._add(entries, failures, "train", str(loop), 0, "loop", str(tmp_path))
  assert len(entries) == 1 and not failures  # listed, then reported by decoding as what it is


def test_a_malformed_big_parameter_entry_is_one_clear_line(tmp_path):
  import pickle  # pylint: disable=g-import-not-at-top
  from vidtx.convert import readers  # pylint: disable=g-import-not-at-top
  for info in ({"w": {"slices": ["w@@.0"], "OriginShape": [3, 3]}},  # 4 values into 3 x 3
               {"w": {"OriginShape": [4]}},                          # no slices
               ["not", "a", "dict"]):
    path = str(tmp_path / "bad.pdparams")
    with open(path, "wb") as f:
      pickle.dump({"UnpackBigParamInfor@@": info, "w@@.0": np.zeros(4, np.float32)}, f, protocol=2)
    with pytest.raises(VidtxError, match=r"bad.pdparams: .*UnpackBigParamInfor@@"):
      readers.load_pdparams(path)


def test_info_calls_a_dataset_with_a_missing_shard_or_an_edited_label_map_incomplete(smoke_data_dir,
                                                                                  tmp_path, capsys):
  from vidtx.data import info  # pylint: disable=g-import-not-at-top
  data_dir = copy_of(smoke_data_dir, tmp_path)
  info.main(["info", data_dir])
  assert "complete      yes" in capsys.readouterr().out
  with open(os.path.join(data_dir, "label_map.txt"), "a") as f:
    f.write("Extra\n")
  os.remove(os.path.join(data_dir, "vidtx-train.tfrecord-00000-of-00001"))
  with pytest.raises(VidtxError, match="is not complete"):
    info.main(["info", data_dir])
  out = capsys.readouterr().out
  assert "complete      NO: the label maps of" in out and "vidtx-train.tfrecord-00000-of-00001" in out


# ----------------------------------------------------------------------------- bad clips skipped
def rot_records(data_dir: str, records=(1, 4)) -> tuple[str, list[str]]:
  """Garbage over every frame of `records` of the training shard (its size unchanged), as rot
  would; returns the shard and the names training gives those clips."""
  from vidtx.data import frame_index  # pylint: disable=g-import-not-at-top
  shard = os.path.join(data_dir, "vidtx-train.tfrecord-00000-of-00001")
  index = frame_index.load(shard)
  with open(shard, "r+b") as f:
    for r in records:
      for offset, length in index["frames"][index["starts"][r]:index["starts"][r + 1]]:
        f.seek(int(offset))
        f.write(b"\0" * int(length))
  return shard, [f"shard {shard}, record {r}" for r in records]


def skipped_names(text: str) -> list[str]:
  return [line.split("skipped a bad training clip: ")[1].split(" (config.data")[0]
          for line in text.splitlines() if "skipped a bad training clip: " in line]


def losses(workdir: str) -> list[tuple[int, float, int]]:
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return [(x["step"], x["loss"], x["bad_clips"]) for x in lines if "loss" in x]


@pytest.mark.slow
def test_skipped_bad_clips_are_counted_named_and_a_resume_gives_the_same_losses(smoke_data_dir, tmp_path, capfd):
  data_dir = copy_of(smoke_data_dir, tmp_path)
  shard, bad = rot_records(data_dir)
  overrides = dict(num_steps=8, checkpoint_every=2, val_every=0, log_every=2)
  config = smoke_config(data_dir, **overrides)
  config.data.on_bad_clip = "skip"
  straight = str(tmp_path / "straight")
  trainer.train_and_evaluate(config, straight)
  names = skipped_names(capfd.readouterr().err)
  straight_losses = losses(straight)
  # 8 steps of 8 from a 15-video split: every clip read 4 or 5 times, each bad one skipped so.
  assert set(names) == set(bad) and len(names) >= 2 * 4, names
  assert straight_losses[-1][2] == len(names) and all(np.isfinite(x[1]) for x in straight_losses)
  meta = ckpt.read_meta(os.path.join(straight, "checkpoints", "8"))
  assert meta["input"]["bad_clips"] == len(names) and len(meta["input"]["positions"]) == 2

  # What a SIGKILL after step 4's save leaves (the later saves never happened; metrics.jsonl
  # has lines past it), then the same run: the same losses and skips. Step 4 was saved while
  # later batches were read ahead, so its recorded stream positions must be the trained ones.
  killed = copy_of(straight, tmp_path, "killed")
  for step in ("6", "8"):
    shutil.rmtree(os.path.join(killed, "checkpoints", step))
  shutil.rmtree(os.path.join(killed, "best"), ignore_errors=True)
  trainer.train_and_evaluate(config, killed)
  assert f"resumed from {killed}/checkpoints/4" in capfd.readouterr().out
  assert losses(killed) == straight_losses


def test_more_bad_clips_than_allowed_is_an_input_failure_naming_the_last():
  # The run then stops as for any input failure (saved at the agreed step, one line:
  # test_a_corrupted_training_shard_ends_the_run_naming_it_with_progress_saved).
  from configs import common  # pylint: disable=g-import-not-at-top
  from vidtx.data import bad_clips, integrity  # pylint: disable=g-import-not-at-top
  data = common.data_config(on_bad_clip="skip", max_bad_clips=2)
  tracker = bad_clips.Tracker(data, streams=[0, 1], per_stream=2, positions=[10, 10])
  batch = lambda counts, names: {"video": np.zeros(4), "bad_clips": np.array(counts),
                                 "bad_names": np.array(names, object)}
  read = tracker.batches(iter([batch([1, 0, 0, 1], [b"s, record 1\n", b"", b"", b"s, record 4\n"]),
                               batch([0, 0, 1, 0], [b"", b"", b"s, record 1\n", b""])]))
  assert "bad_clips" in next(read)
  with pytest.raises(VidtxError) as error:
    next(read)
  assert integrity.describe_read_error(error.value) == (
      "3 bad training clips skipped, more than config.data.max_bad_clips=2 (the last: s, record "
      "1); restore or re-prepare the dataset, or raise the limit")
  tracker.step()  # the first batch trained on: its positions move on by its dropped clips too
  assert tracker.positions == [13, 13] and tracker.count == 2
  assert tracker.record() == {"positions": [13, 13], "bad_clips": 2}
