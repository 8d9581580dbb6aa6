"""Score files: every test video's class scores, as `eval.py --save_scores FILE.npz` writes them
(mmaction2's `--dump`) and `python -m vidtx.ensemble` reads them:

    ids [N] str            each video's id (as data_prep recorded it: v_ApplyEyeMakeup_g01_c01)
    labels [N] int         its true class
    scores [N, K] float32  its scores, averaged over the views as config.eval.averaging says
                           (`score`: logits, `prob`: probabilities)
    probs [N, K] float32   softmax probabilities (= scores where averaging is `prob`)
    label_names [K] str, averaging, split, protocol, checkpoint (0-d str)
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import scipy.special

from vidtx.errors import VidtxError

KEYS = ("ids", "labels", "scores", "probs", "label_names", "averaging", "split", "protocol",
        "checkpoint")


def write_scores(path: str, *, scores: np.ndarray, labels: np.ndarray, ids: Sequence[str],
                 label_names: Sequence[str], averaging: str, split: str = "", protocol: str = "",
                 checkpoint: str = "") -> str:
  """Writes a score file (see the module doc) atomically; returns its path."""
  scores = np.asarray(scores, np.float32)
  if scores.shape != (len(ids), len(label_names)) or len(labels) != len(ids):
    raise VidtxError(f"{path}: scores {scores.shape} do not fit {len(ids)} videos x "
                     f"{len(label_names)} classes")
  probs = scores if averaging == "prob" else scipy.special.softmax(scores, axis=-1)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.npz")
  np.savez(tmp, ids=np.asarray(list(ids), str), labels=np.asarray(labels, np.int32), scores=scores,
           probs=probs.astype(np.float32), label_names=np.asarray(list(label_names), str),
           averaging=np.asarray(averaging), split=np.asarray(split), protocol=np.asarray(protocol),
           checkpoint=np.asarray(checkpoint))
  os.replace(tmp, path)
  return path


def read_scores(path: str) -> dict:
  """A score file as a dict (arrays; the 0-d strings as str)."""
  try:
    with np.load(path, allow_pickle=False) as f:
      missing = [k for k in KEYS if k not in f.files]
      if missing:
        raise VidtxError(f"{path} is not a vidtx score file (no {missing}); write one with "
                         "eval.py --save_scores")
      out = {k: f[k] for k in KEYS}
  except (OSError, ValueError, EOFError) as e:
    raise VidtxError(f"{path} is not a readable score file ({type(e).__name__}); write one with "
                     "eval.py --save_scores") from None
  for key in ("averaging", "split", "protocol", "checkpoint"):
    out[key] = str(out[key])
  out["label_names"] = [str(x) for x in out["label_names"]]
  out["ids"] = [str(x) for x in out["ids"]]
  return out
