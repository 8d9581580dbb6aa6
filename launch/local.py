"""N processes on this machine, M CPU devices each, joined by jax.distributed over 127.0.0.1.

  python launch/local.py 2 4 train.py --config configs/demo.py:smoke=True --workdir /tmp/demo2x4
  (launch/local.sh is the same)

Multi-host code run anywhere; the tests use it too. Each process runs `SCRIPT --distributed
ARGS...` with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID set (vidtx.multihost
reads them). SIGTERM and SIGINT are passed to every process (they agree on a step, save there
and exit). The exit status is the first non-zero status of any process (0 if all succeed);
when one fails, the others get VIDTX_LAUNCH_GRACE_S seconds (default VIDTX_HEARTBEAT_TIMEOUT_S,
60, + 30) to notice and stop, then are killed. Output lines of process i > 0 start with "[process i] ".
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

USAGE = "usage: launch/local.sh NUM_PROCESSES DEVICES_PER_PROCESS SCRIPT [ARGS...]"
# Third-party chatter that is not for users (gloo's connection lines).
QUIET = re.compile(rb"^\[Gloo\] Rank \d+ is connected")
HEARTBEAT_TIMEOUT_S = 60


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(index: int, num_processes: int, devices: int, port: int) -> dict[str, str]:
  flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", ""))
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
              XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}".strip(),
              JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(num_processes),
              JAX_PROCESS_ID=str(index))


def relay(stream, out, prefix: bytes) -> None:
  for line in iter(stream.readline, b""):
    if not QUIET.match(line):
      out.buffer.write(prefix + line)
      out.buffer.flush()


def describe(status: int) -> str:
  if status < 0:
    return f"signal {signal.Signals(-status).name}"
  return f"status {status}"


def exit_status(status: int) -> int:
  return 128 - status if status < 0 else status


def main(argv: list[str]) -> int:
  if len(argv) < 4 or not (argv[1].isdigit() and argv[2].isdigit()) or min(int(argv[1]), int(argv[2])) < 1:
    print(f"error: {USAGE}", file=sys.stderr)
    return 2
  num_processes, devices, script, args = int(argv[1]), int(argv[2]), argv[3], argv[4:]
  port = free_port()
  procs, relays = [], []
  for i in range(num_processes):
    proc = subprocess.Popen([sys.executable, "-u", script, "--distributed", *args],
                            env=process_env(i, num_processes, devices, port),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    prefix = f"[process {i}] ".encode() if i else b""
    for stream, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
      thread = threading.Thread(target=relay, args=(stream, out, prefix), daemon=True)
      thread.start()
      relays.append(thread)
    procs.append(proc)

  def forward(signum, frame):
    del frame
    for proc in procs:
      if proc.poll() is None:
        proc.send_signal(signum)

  signal.signal(signal.SIGTERM, forward)
  signal.signal(signal.SIGINT, forward)

  grace = int(os.environ.get("VIDTX_LAUNCH_GRACE_S", 0)) or (
      int(os.environ.get("VIDTX_HEARTBEAT_TIMEOUT_S", HEARTBEAT_TIMEOUT_S)) + 30)
  status, deadline, reported = 0, None, set()
  while any(p.poll() is None for p in procs):
    for i, proc in enumerate(procs):
      code = proc.poll()
      if code is None or i in reported:
        continue
      reported.add(i)
      if code and not status:
        status = exit_status(code)
        if any(p.poll() is None for p in procs):
          print(f"local.sh: process {i} ended with {describe(code)}; the others get {grace}s to stop",
                file=sys.stderr, flush=True)
          deadline = time.monotonic() + grace
    if deadline is not None and time.monotonic() > deadline:
      print(f"local.sh: killing the processes still running {grace}s after the first failure",
            file=sys.stderr, flush=True)
      for proc in procs:
        if proc.poll() is None:
          proc.kill()
      deadline = None
    time.sleep(0.1)
  for thread in relays:
    thread.join()
  if not status:
    status = next((exit_status(p.returncode) for p in procs if p.returncode), 0)
  return status


if __name__ == "__main__":
  sys.exit(main(sys.argv))
