"""A model that learned the demo's motions looks at the moving object: the CLS attention maps
of `vidtx.visualize` concentrate on the object of synthetic test videos.

  VIDTX_DEMO_WORKDIR=workdirs/demo python -m pytest -q tests/test_attention_trained.py

Needs a trained `configs/demo.py` workdir (python train.py --config configs/demo.py --workdir
workdirs/demo: minutes on a CPU); skipped without one. The smoke models have not learned the
motions (their maps are uniform), and none of the tasks a small ViViT was tried on learned
within a CI test's time (see issue 20).
"""
import os
from unittest import mock

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from test_outputs import object_concentration, synthetic_video_and_mask
from vidtx import checkpoint, visualize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def visualize_main(*args: str) -> None:
  """`python -m vidtx.visualize ARGS` in this process (no 9 s import of a new one): the module's
  flags, defined on flag values of their own, stand in for absl's global ones."""
  argv = ["vidtx.visualize", *args]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config", flag_values=values, lock_config=True,
                                  sys_argv=argv)  # where its --config.key=value overrides are
  flags.DEFINE_string("checkpoint", None, "checkpoint", flag_values=values)
  flags.DEFINE_string("out", None, "out", flag_values=values)
  argv = values(argv)
  with mock.patch.object(flags, "FLAGS", values):
    visualize.main(argv)


@pytest.mark.skipif(not os.environ.get("VIDTX_DEMO_WORKDIR"),
                    reason="set VIDTX_DEMO_WORKDIR to a trained configs/demo.py workdir (python "
                    "train.py --config configs/demo.py --workdir workdirs/demo: minutes on a CPU)")
def test_trained_demo_attends_to_the_moving_object(tmp_path):
  from configs import demo  # pylint: disable=g-import-not-at-top

  config = demo.get_config()
  workdir = os.environ["VIDTX_DEMO_WORKDIR"]
  prepared = checkpoint.read_meta(workdir)["prepared"]
  videos = [synthetic_video_and_mask(str(tmp_path), c, 1, config.data.synthetic)
            for c in range(config.model.num_classes)]  # test-split videos (group 1)
  out = tmp_path / "maps"
  visualize_main(f"--config={os.path.join(REPO, 'configs', 'demo.py')}", f"--checkpoint={workdir}",
                 f"--out={out}", *[video for video, _ in videos])
  ratios = []
  for video, mask in videos:
    saved = np.load(out / (os.path.splitext(os.path.basename(video))[0] + ".npz"))
    assert saved["maps"].min() >= 0 and saved["maps"].sum() == pytest.approx(1.0, abs=1e-5)
    mask_clip = visualize.load_clip(mask, config, prepared)
    ratios.append(object_concentration(saved["maps"], int(saved["frames_per_step"]), mask_clip))
  assert min(ratios) > 1.5 and np.median(ratios) > 3, ratios
