"""Several processes for real (launch/local.sh: N processes x M CPU devices, jax.distributed over
127.0.0.1): the same losses and eval as one process, stop signals, elastic resume, a dead peer.

One chain of runs checks several properties, to keep the suite short:
  2 processes x 4 devices, SIGTERM to the launcher  -> all stop at one step, save, exit 0
  1 process x 4 devices resumes it, then 1 x 1      -> the same losses as one 1 x 8 run
  eval.py on 2 x 4 devices                          -> the JSON of one process
The SLURM launcher runs under a stub srun, where one task is killed: the other stops by itself.
"""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import cli_runner
from configs import demo
from vidtx import evaluate, multihost, sharding, trainer

pytestmark = pytest.mark.slow  # several processes joined by jax.distributed, launchers, a dead peer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A constant learning rate, so that a run's trajectory does not depend on its num_steps.
TRAIN = {"optim.schedule": "constant", "train.log_every": 1, "train.checkpoint_every": 2,
         "train.val_every": 4}


def flags(data_dir, workdir, num_steps):
  return ["--config=configs/demo.py:smoke=True", f"--workdir={workdir}",
          f"--config.data.dir={data_dir}", f"--config.train.num_steps={num_steps}",
          *[f"--config.{k}={v}" for k, v in TRAIN.items()]]


def launch(num_processes, devices, script, *args, env=None):
  return subprocess.Popen([sys.executable, "launch/local.py", str(num_processes), str(devices),
                           script, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=dict(os.environ, **(env or {})))


def steps_saved(workdir):
  return ocp.utils.checkpoint_steps(os.path.join(workdir, "checkpoints"))


def wait_for_checkpoint_after(workdir, step, proc, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if any(s > step for s in steps_saved(workdir)):
      return
    time.sleep(0.05)
  raise AssertionError(f"no checkpoint after step {step} (exit status {proc.poll()})")


def child_with_process_id(launcher_pid, process_id):
  for pid in subprocess.run(["pgrep", "-P", str(launcher_pid)], capture_output=True,
                            text=True).stdout.split():
    with open(f"/proc/{pid}/environ", "rb") as f:
      if f"JAX_PROCESS_ID={process_id}".encode() in f.read().split(b"\0"):
        return int(pid)
  raise AssertionError(f"no process {process_id} under the launcher")


def losses(workdir):
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  steps = [l["step"] for l in lines]
  assert steps == sorted(set(steps)), f"steps logged twice: {steps}"
  return {l["step"]: l["loss"] for l in lines}


def test_two_processes_stop_together_resume_on_one_and_match_one(smoke_data_dir, tmp_path):
  workdir = str(tmp_path / "elastic")

  # 2 x 4 devices; SIGTERM (a preemption) through the launcher.
  run = launch(2, 4, "train.py", *flags(smoke_data_dir, workdir, 1000))
  wait_for_checkpoint_after(workdir, 0, run)
  run.send_signal(signal.SIGTERM)
  out, err = run.communicate(timeout=300)
  assert run.returncode == 0, err
  first = cli_runner.stopped_step(out, "SIGTERM")
  assert f"checkpoint saved in {workdir}/checkpoints/{first}; run the same command to resume" in out
  assert max(steps_saved(workdir)) == first
  assert "Traceback" not in err and "[process 1] stopped" not in out  # only process 0 speaks
  log = [l.split(" ", 1)[1] for l in open(os.path.join(workdir, "log.txt"))]
  assert len([l for l in log if l.startswith(f"step {first}/")]) == 1  # one writer

  # 1 process x 4 devices resumes it, then 1 x 1: the same input streams, the same global batches.
  resumed_from = first
  for devices, target in ((4, first + 2), (1, first + 4)):
    result = subprocess.run(
        [sys.executable, "train.py", *flags(smoke_data_dir, workdir, target)], cwd=REPO,
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"))
    assert result.returncode == 0, result.stderr
    assert f"devices: {devices} x cpu in 1 process(es)" in result.stdout
    assert f"resumed from {workdir}/checkpoints/{resumed_from}" in result.stdout
    resumed_from = target
  elastic = losses(workdir)

  # One uninterrupted run on 1 process x 8 devices.
  config = demo.get_config("smoke=True")
  config.data.dir = smoke_data_dir
  for key, value in TRAIN.items():
    section, name = key.split(".")
    config[section][name] = value
  config.train.num_steps = target
  straight = str(tmp_path / "straight")
  trainer.train_and_evaluate(config, straight)
  reference = losses(straight)
  assert sorted(elastic) == sorted(reference) == list(range(1, target + 1))
  np.testing.assert_allclose([elastic[s] for s in reference], list(reference.values()), rtol=1e-3)

  # eval.py on 2 processes writes what one process computes.
  output = tmp_path / "eval.json"
  run = launch(2, 4, "eval.py", "--config=configs/demo.py:smoke=True", f"--workdir={straight}",
               f"--config.data.dir={smoke_data_dir}", f"--output={output}")
  out, err = run.communicate(timeout=300)
  assert run.returncode == 0, err
  two = json.loads(output.read_text())
  one = evaluate.test_protocol(config, straight, sharding.make_mesh(config.mesh))
  for key in one:
    if key == "loss":
      assert two[key] == pytest.approx(one[key], rel=1e-5)
    else:
      assert two[key] == one[key], key


def test_the_local_launcher_passes_on_the_first_failure(tmp_path):
  script = tmp_path / "task.py"
  script.write_text("import os, sys, time\n"
                    "if os.environ['JAX_PROCESS_ID'] == '1':\n"
                    "  print('failing', flush=True); sys.exit(3)\n"
                    "time.sleep(600)\n")
  started = time.time()
  run = launch(2, 1, str(script), env={"VIDTX_LAUNCH_GRACE_S": "1"})
  out, err = run.communicate(timeout=120)
  assert run.returncode == 3 and time.time() - started < 60
  assert "[process 1] failing" in out
  assert "local.sh: process 1 ended with status 3; the others get 1s to stop" in err
  assert "local.sh: killing the processes still running 1s after the first failure" in err


def test_each_process_reads_its_own_streams_and_together_the_one_process_batches(tmp_path,
                                                                                 monkeypatch):
  import data_fixtures  # pylint: disable=g-import-not-at-top
  from vidtx.data import pipeline  # pylint: disable=g-import-not-at-top
  # 6 shards of 4 videos; a video's label is its position in the split.
  data_dir = data_fixtures.write_dataset(str(tmp_path / "d"), {"train": [12] * 24, "test": [12]},
                                         num_shards=6)
  config = demo.get_config("smoke=True").data
  config.update(dir=data_dir, shuffle_buffer=8)

  def batches(process_index, process_count, count=6):
    monkeypatch.setattr(jax, "process_index", lambda: process_index)
    monkeypatch.setattr(jax, "process_count", lambda: process_count)
    read = multihost.train_batches(pipeline.make_train_dataset, config, global_batch=8,
                                   streams=4, seed=0, examples_done=16)
    return [next(read)["label"] for _ in range(count)]

  one = batches(0, 1)
  two = [batches(p, 2) for p in (0, 1)]
  four = [batches(p, 4) for p in range(4)]
  for i, labels in enumerate(one):  # the same global batches for 1, 2 and 4 processes
    np.testing.assert_array_equal(np.concatenate([b[i] for b in two]), labels)
    np.testing.assert_array_equal(np.concatenate([b[i] for b in four]), labels)
  # 6 shards over 4 streams: stream k reads shards k, k + 4; processes share no shard.
  shard_of = lambda labels: set(np.concatenate(labels) // 4)
  assert shard_of(two[0]) <= {0, 1, 4, 5} and shard_of(two[1]) <= {2, 3}


STUB_SRUN = """#!/usr/bin/env bash
# A stand-in for SLURM's srun: $STUB_NTASKS tasks on this machine with SLURM's variables set.
while [[ $1 == -* ]]; do shift; done
n=${STUB_NTASKS:-2}
job=$((RANDOM + 1000))
pids=()
for ((i = 0; i < n; i++)); do
  SLURM_JOB_ID=$job SLURM_STEP_NODELIST=localhost SLURM_NTASKS=$n SLURM_PROCID=$i \\
  SLURM_LOCALID=$i SLURM_STEP_NUM_NODES=$n "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""


def test_the_slurm_launcher_runs_under_srun_and_a_dead_task_ends_the_job(smoke_data_dir, tmp_path):
  stub = tmp_path / "bin" / "srun"
  stub.parent.mkdir()
  stub.write_text(STUB_SRUN)
  stub.chmod(0o755)
  workdir = str(tmp_path / "w")
  env = dict(os.environ, SLURM_SUBMIT_DIR=REPO, STUB_NTASKS="2", JAX_PLATFORMS="cpu",
             PATH=f"{stub.parent}:{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
             XLA_FLAGS="--xla_force_host_platform_device_count=4", VIDTX_HEARTBEAT_TIMEOUT_S="10")
  job = subprocess.Popen(
      ["bash", "launch/slurm_gpu.sh", "configs/demo.py:smoke=True", workdir,
       f"--config.data.dir={smoke_data_dir}", "--config.train.num_steps=1000",
       "--config.train.checkpoint_every=2", "--config.train.val_every=0"],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  wait_for_checkpoint_after(workdir, 0, job)
  # One task dies (SIGKILL); nothing outside the job helps: the other must notice and stop.
  tasks = subprocess.run(["pgrep", "-f", "--", f"--workdir {workdir}"], capture_output=True,
                         text=True).stdout.split()
  task_1 = [int(pid) for pid in tasks if b"SLURM_PROCID=1" in
            open(f"/proc/{pid}/environ", "rb").read().split(b"\0") and
            b"python" in open(f"/proc/{pid}/cmdline", "rb").read()]
  os.kill(task_1[0], signal.SIGKILL)
  killed = time.time()
  out, err = job.communicate(timeout=300)
  assert job.returncode != 0 and time.time() - killed < 120
  assert "devices: 8 x cpu in 2 process(es)" in out
  assert "The following tasks are unhealthy (stopped sending heartbeats):\n1\n" in err
  assert steps_saved(workdir)  # the last checkpoint is kept


def test_the_tpu_pod_launcher_prints_its_command_in_a_dry_run():
  result = subprocess.run(
      ["bash", "launch/tpu_pod.sh", "my-tpu", "us-central2-b", "configs/timesformer_k400.py",
       "gs://bucket/runs/tsf", "--config.train.batch_size=64"], cwd=REPO, capture_output=True,
      text=True, timeout=60, env=dict(os.environ, DRY_RUN="1"))
  assert result.returncode == 0, result.stderr
  words = shlex.split(result.stdout)  # as the shell would run it
  assert words[:10] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--zone",
                        "us-central2-b", "--worker=all", "--command"]
  assert words[10] == ("cd ~/vidtx && python train.py --distributed --config configs/timesformer_k400.py "
                    "--workdir gs://bucket/runs/tsf --config.train.batch_size=64")
