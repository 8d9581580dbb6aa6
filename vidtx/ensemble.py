"""Ensembles of score files: python -m vidtx.ensemble a.npz b.npz [--output result.json]

The ensemble averages (with optional weights) the probabilities of several score files
(vidtx.score_files, written by `eval.py --save_scores`) of the same videos (or their scores:
--average=score), e.g. two checkpoints or two view protocols, and reports top-1, top-5, mean
class accuracy and the confusion matrix as eval.py does.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from vidtx import evaluate
from vidtx.errors import VidtxError
from vidtx.score_files import read_scores, write_scores


def combine(files: Sequence[dict], names: Sequence[str], weights: Sequence[float] | None = None,
            average: str = "prob") -> dict:
  """The weighted mean of the files' probabilities (`prob`) or scores (`score`), on the videos of
  the first file, in its order. Every file must hold the same videos, labels and classes."""
  if average not in ("prob", "score"):
    raise VidtxError(f"--average={average!r}; use prob or score")
  weights = [1.0] * len(files) if weights is None else [float(w) for w in weights]
  if len(weights) != len(files):
    raise VidtxError(f"{len(weights)} weights for {len(files)} score files")
  first = files[0]
  for f, name in zip(files[1:], names[1:]):
    if f["label_names"] != first["label_names"]:
      raise VidtxError(f"{name} scores other classes than {names[0]} (another label map)")
    if sorted(f["ids"]) != sorted(first["ids"]):
      only = sorted(set(f["ids"]) ^ set(first["ids"]))
      raise VidtxError(f"{name} and {names[0]} score different videos ({len(only)} in one only, "
                       f"e.g. {only[0]!r}); evaluate both on the same split")
  total = 0.0
  for f, name, w in zip(files, names, weights):
    where = {video: i for i, video in enumerate(f["ids"])}
    order = np.asarray([where[video] for video in first["ids"]])
    if not np.array_equal(f["labels"][order], first["labels"]):
      raise VidtxError(f"{name} and {names[0]} disagree on the labels of the same videos")
    total = total + w * f["probs" if average == "prob" else "scores"][order].astype(np.float64)
  return {"ids": first["ids"], "labels": first["labels"], "label_names": first["label_names"],
          "scores": (total / sum(weights)).astype(np.float32), "averaging": average}


def metrics(scores: np.ndarray, labels: np.ndarray, label_names: Sequence[str]) -> dict:
  """top1, top5, num_videos and `evaluate.class_report` of per-video scores [N, K]."""
  scores, labels = np.asarray(scores), np.asarray(labels)
  above = (scores > np.take_along_axis(scores, labels[:, None], axis=1)).sum(axis=1)
  predicted = np.where(above == 0, labels, scores.argmax(axis=1))  # ties as evaluate counts them
  k = len(label_names)
  confusion = np.zeros((k, k), np.int64)
  np.add.at(confusion, (labels, predicted), 1)
  return {"top1": float(np.mean(above < 1)), "top5": float(np.mean(above < 5)),
          "num_videos": int(len(labels)), **evaluate.class_report(confusion, label_names)}


def confusion_png_path(json_path: str) -> str:
  """Where the confusion matrix picture of a result JSON goes: beside it, `<name>_confusion.png`."""
  return os.path.splitext(json_path)[0] + "_confusion.png"


def plots_confusion(path: str, result: dict, title: str = "") -> str:
  """Draws the confusion matrix of a result (`evaluate.class_report`'s keys) as a PNG."""
  from vidtx import plots  # pylint: disable=g-import-not-at-top  (matplotlib)

  matrix = result["confusion_matrix"]
  return plots.save(plots.confusion_figure(np.asarray(matrix["counts"]), matrix["classes"], title),
                    path)


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from vidtx import messages  # pylint: disable=g-import-not-at-top

  files = argv[1:]
  if not files:
    raise VidtxError("give one or more score files written by eval.py --save_scores")
  FLAGS = flags.FLAGS
  weights = [float(w) for w in FLAGS.weights.split(",")] if FLAGS.weights else None
  combined = combine([read_scores(f) for f in files], files, weights, FLAGS.average)
  result = {"files": [os.path.abspath(f) for f in files], "weights": weights or [1.0] * len(files),
            "average": FLAGS.average,
            **metrics(combined["scores"], combined["labels"], combined["label_names"])}
  messages.say(f"ensemble of {len(files)} score file(s), {FLAGS.average} averaged: top-1 "
               f"{result['top1']:.4f}, top-5 {result['top5']:.4f}, mean class top-1 "
               f"{result['mean_class_top1']:.4f} over {result['num_videos']} videos")
  if FLAGS.output:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, "w") as f:
      f.write(evaluate.to_json(result))
    picture = confusion_png_path(FLAGS.output)
    plots_confusion(picture, result, title=f"ensemble of {len(files)}")
    messages.say(f"written to {FLAGS.output} (confusion matrix: {picture})")
  if FLAGS.save_scores:
    write_scores(FLAGS.save_scores, scores=combined["scores"], labels=combined["labels"],
                 ids=combined["ids"], label_names=combined["label_names"], averaging=FLAGS.average,
                 protocol=f"ensemble of {', '.join(files)}")
    messages.say(f"ensemble scores written to {FLAGS.save_scores}")


if __name__ == "__main__":
  from absl import flags as _flags  # pylint: disable=g-import-not-at-top
  from vidtx import cli  # pylint: disable=g-import-not-at-top

  _flags.DEFINE_string("output", None, "Where to write the JSON result (default: print only).")
  _flags.DEFINE_string("weights", None, "Comma-separated weight per file (default: equal).")
  _flags.DEFINE_enum("average", "prob", ["prob", "score"],
                     "Average the files' probabilities or their scores (logits where averaging=score).")
  _flags.DEFINE_string("save_scores", None, "Also write the ensemble's scores as a score file.")
  cli.run(main)
