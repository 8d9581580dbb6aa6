r"""The reconstruction picture of launch/videomae_synthetic.py's pretrained model on video files.

  python launch/videomae_picture.py /tmp/vx/mae_synth/pretrain_0 docs/img \
      /tmp/vx/mae_synth/synthetic_motion_videos/videos/MoveLeft/v_MoveLeft_g01_c01.avi

(With a config file, `python -m vidtx.visualize --config ...:pretrain --checkpoint ... VIDEO` draws
the same through Family.explain; the experiment builds its config in code.)
"""
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import videomae_synthetic  # noqa: E402  pylint: disable=g-import-not-at-top

from vidtx import checkpoint, evaluate, sharding, visualize  # noqa: E402  pylint: disable=g-import-not-at-top


def main() -> None:
  workdir, out, videos = sys.argv[1], sys.argv[2], sys.argv[3:]
  config = videomae_synthetic.experiment_config(
      "pretrain", os.path.join(os.path.dirname(os.path.abspath(workdir)), "synthetic_motion_mae"), 0, 1)
  config.model.update(checkpoint.read_meta(workdir)["model"])  # as pretrained (normalize_target, ...)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  model, variables, meta = evaluate.restore_model(config, workdir, mesh)
  for video in videos:
    clip = visualize.load_clip(video, config, meta.get("prepared") or {})
    picture = visualize.model_maps(model, variables, clip, config.data)
    name = os.path.splitext(os.path.basename(video))[0]
    print(video, picture.write(out, name, clip, meta["label_names"]), f"loss {picture.loss:.4f}")


if __name__ == "__main__":
  main()
