"""What a user looks at (docs/outputs.md): eval's per-class results, confusion matrix and score files,
their ensembles, TensorBoard's pictures, profiles, and the attention maps of `vidtx.visualize`.

  python -m pytest -q tests/test_outputs.py
"""
import glob
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cli_runner
import data_fixtures
from vidtx import ensemble, evaluate, models, sharding, visualize, writers
from vidtx.data import synthetic
from vidtx.errors import VidtxError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "--config=configs/demo.py:smoke=True"


run_cli = cli_runner.run_main  # in this process: no second import of JAX and TensorFlow


@pytest.fixture(scope="module")
def run(trained):
  """The shared trained smoke run (conftest: mixup, so captions of mixed clips, and a 2-step
  profile): (config, workdir)."""
  config, workdir, _ = trained
  return config, workdir


def tensorboard_events(workdir):
  """{tag: (plugin name, [(step, value)])} of a run's TensorBoard files, read with TensorBoard's
  own event reader; images as PNG bytes, texts as str."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top

  events = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"),
                                              size_guidance={"tensors": 0})
  events.Reload()
  out = {}
  for tag in events.Tags()["tensors"]:
    plugin = events.SummaryMetadata(tag).plugin_data.plugin_name
    values = []
    for event in events.Tensors(tag):
      value = tf.make_ndarray(event.tensor_proto)
      if plugin == "images":  # [width, height, png...]
        value = (int(value[0]), int(value[1]), value[2])
      elif plugin == "text":
        value = value.item().decode()
      values.append((event.step, value))
    out[tag] = (plugin, values)
  return out


# ----------------------------------------------------------------------------- training outputs
def test_tensorboard_holds_config_input_clips_and_confusion_matrices(run):
  config, workdir = run
  events = tensorboard_events(workdir)
  plugin, clips = events["train/input_clips"]
  assert plugin == "images" and [step for step, _ in clips] == [1]  # once, at the start
  width, height, png = clips[0][1]
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and width > 600 and height > 400
  plugin, matrices = events["val/confusion_matrix"]
  assert plugin == "images" and [step for step, _ in matrices] == [3, 6]  # at each validation
  plugin, tables = events["val/per_class_top1"]
  assert plugin == "text" and [step for step, _ in tables] == [3, 6]
  rows = tables[-1][1].splitlines()[2:]
  assert sorted(r.split(" | ")[0].strip("| ") for r in rows) == sorted(
      synthetic.class_names(config.model.num_classes))
  assert events["config"][0] == "text" and '"profile_steps": 2' in events["config"][1][0][1]
  assert "_hparams_/session_start_info" in events
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert all(0.0 <= line["val_mean_class_top1"] <= 1.0 for line in lines if "val_top1" in line)


def test_profile_steps_leave_a_trace(run):
  _, workdir = run
  traces = glob.glob(os.path.join(workdir, "profile", "plugins", "profile", "*", "*.xplane.pb"))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
  log = open(os.path.join(workdir, "log.txt")).read()
  assert f"profile of steps 2-3 written to {os.path.dirname(traces[0])}" in log


def test_input_captions_name_the_mixed_classes():
  names = ["A", "B", "C"]
  assert writers.target_caption(np.array([0.0, 1.0, 0.0]), names) == "B"
  assert writers.target_caption(np.array([0.7, 0.0, 0.3]), names) == "0.70 A + 0.30 C"
  smoothed = np.array([0.9, 0.05, 0.05])  # label smoothing is no mixing
  assert writers.target_caption(smoothed, names) == "A"


# ----------------------------------------------------------------------------- eval and ensembles
def test_eval_writes_per_class_results_confusion_and_scores(run, tmp_path):
  config, workdir = run
  output, scores = tmp_path / "eval.json", tmp_path / "scores.npz"
  result = run_cli("eval.py", CONFIG, f"--workdir={workdir}", f"--config.data.dir={config.data.dir}",
                   f"--output={output}", f"--save_scores={scores}")
  assert result.returncode == 0, result.stderr
  saved = json.loads(output.read_text())
  names = synthetic.class_names(config.model.num_classes)
  assert [c["class"] for c in saved["per_class"]] == names
  counts = np.asarray(saved["confusion_matrix"]["counts"])
  assert saved["confusion_matrix"]["classes"] == names and counts.shape == (len(names),) * 2
  assert np.trace(counts) / saved["num_videos"] == pytest.approx(saved["top1"])
  assert counts.sum() == saved["num_videos"]
  per_class = [c["top1"] for c in saved["per_class"] if c["videos"]]
  assert saved["mean_class_top1"] == pytest.approx(np.mean(per_class))
  assert os.path.getsize(tmp_path / "eval_confusion.png") > 0

  dump = ensemble.read_scores(str(scores))
  assert sorted(dump["ids"]) == sorted(f"v_{name}_g01_c01" for name in names)  # the test split
  assert [names[label] for label in dump["labels"]] == [i.split("_")[1] for i in dump["ids"]]
  assert dump["scores"].shape == (saved["num_videos"], len(names)) and dump["label_names"] == names
  np.testing.assert_allclose(dump["probs"].sum(axis=1), 1.0, rtol=1e-5)
  again = ensemble.metrics(dump["scores"], dump["labels"], names)
  assert again["top1"] == saved["top1"] and again["confusion_matrix"] == saved["confusion_matrix"]

  # An ensemble of two checkpoints: the mean of their probabilities.
  other = tmp_path / "step3.npz"
  evaluate.test_protocol(config, f"{workdir}/checkpoints/3", sharding.make_mesh(config.mesh),
                         save_scores=str(other))
  both = tmp_path / "both.json"
  result = run_cli("-m", "vidtx.ensemble", str(scores), str(other), f"--output={both}")
  assert result.returncode == 0, result.stderr
  second = ensemble.read_scores(str(other))
  order = [second["ids"].index(i) for i in dump["ids"]]
  expected = ensemble.metrics((dump["probs"] + second["probs"][order]) / 2, dump["labels"], names)
  combined = json.loads(both.read_text())
  assert {k: combined[k] for k in expected} == expected
  assert os.path.getsize(tmp_path / "both_confusion.png") > 0


def test_per_class_results_and_scores_same_on_8_devices_as_on_1(run, tmp_path):
  config, workdir = run
  config = config.copy_and_resolve_references()
  results = []
  for batch_size, devices in [(8, 1), (3, 8)]:
    config.eval.batch_size = batch_size
    mesh = sharding.make_mesh({"data": devices, "fsdp": 1, "tensor": 1}, jax.devices()[:devices])
    path = str(tmp_path / f"{devices}.npz")
    results.append((evaluate.test_protocol(config, workdir, mesh, save_scores=path),
                    ensemble.read_scores(path)))
  (one, one_scores), (eight, eight_scores) = results
  for key in ("per_class", "confusion_matrix", "most_confused", "mean_class_top1", "top1"):
    assert one[key] == eight[key], key
  assert one_scores["ids"] == eight_scores["ids"]
  np.testing.assert_allclose(one_scores["scores"], eight_scores["scores"], rtol=1e-5, atol=1e-6)


def test_class_report_by_hand():
  report = evaluate.class_report(np.array([[2, 1, 0], [0, 3, 0], [0, 0, 0]]), ["a", "b", "c"])
  assert [c["top1"] for c in report["per_class"]] == [pytest.approx(2 / 3), 1.0, None]
  assert report["mean_class_top1"] == pytest.approx((2 / 3 + 1) / 2)  # c has no videos
  assert report["most_confused"] == [{"true": "a", "predicted": "b", "videos": 1,
                                      "fraction": pytest.approx(1 / 3)}]


def test_ensemble_refuses_files_of_other_videos_or_classes(tmp_path):
  common = dict(labels=[0, 1], label_names=["a", "b"], averaging="score")
  a = ensemble.write_scores(str(tmp_path / "a.npz"), scores=np.eye(2), ids=["x", "y"], **common)
  b = ensemble.write_scores(str(tmp_path / "b.npz"), scores=np.eye(2), ids=["x", "z"], **common)
  files = [ensemble.read_scores(a), ensemble.read_scores(b)]
  with pytest.raises(VidtxError, match="score different videos"):
    ensemble.combine(files, [a, b])
  files[1]["label_names"] = ["a", "c"]
  with pytest.raises(VidtxError, match="other classes"):
    ensemble.combine(files, [a, b])
  (tmp_path / "bad.npz").write_text("not a score file")
  result = run_cli("-m", "vidtx.ensemble", str(tmp_path / "bad.npz"))
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert f"{tmp_path / 'bad.npz'} is not a readable score file" in result.stderr


# ----------------------------------------------------------------------------- pictures
def test_confusion_figure_of_400_classes_shows_the_most_confused_pairs():
  from vidtx import plots  # pylint: disable=g-import-not-at-top

  confusion = np.diag(np.full(400, 10))
  confusion[7, 300] = confusion[300, 7] = 4
  confusion[12, 13] = 2
  assert plots.pair_classes(confusion, 30) == [7, 300, 12, 13]
  names = [f"class{i}" for i in range(400)]
  image = plots.to_array(plots.confusion_figure(confusion, names))
  assert image.ndim == 3 and image.shape[2] == 3 and image.shape[1] < 2000


# ----------------------------------------------------------------------------- attention maps
# One variant per way the CLS attends: per frame, joint (time fastest / time first), tubelets,
# factorised (spatial and temporal encoders).
@pytest.mark.parametrize("name,variant", [("tokshift", "default"), ("timesformer", "divided"),
                                          ("timesformer", "joint"),
                                          ("vivit", "spatio_temporal"), ("vivit", "factorised")])
def test_recomputed_attention_is_the_models_own(name, variant):
  # The last block's attention output from our probabilities equals the model's.
  config = models.tiny_config(name, variant, num_classes=5, dtype="float32")
  model = models.build(config)
  video = jax.random.normal(jax.random.key(1), (1, config["num_frames"], 32, 32, 3))
  variables = nn.unbox(models.jit_init(lambda v: model.init(jax.random.key(0), v, train=False))(video))
  last = f"blocks_{model.depth - 1}"
  paths = [(last, "attn", "qkv"), (last, "attn")]
  _, seen = jax.jit(lambda v, x: visualize.record_outputs(model, v, x, paths))(variables, video)
  qkv = seen[(last, "attn", "qkv")]
  dim, heads = qkv.shape[-1] // 3, model.num_heads
  values = qkv.reshape(qkv.shape[:-1] + (3, heads, dim // heads))[..., 2, :, :]
  mixed = jnp.einsum("...hqk,...khd->...qhd", visualize.attention_probs(qkv, heads), values)
  proj = variables["params"][last]["attn"]["proj"]
  np.testing.assert_allclose(mixed.reshape(qkv.shape[:-1] + (dim,)) @ proj["kernel"] + proj["bias"],
                             seen[(last, "attn")], atol=1e-5)
  maps = visualize.vit_maps(model, variables, video)
  assert maps.maps.shape[0] * maps.frames_per_step == config["num_frames"]
  assert maps.maps.min() >= 0 and maps.maps.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", ["swin", "tsm"])
def test_grad_cam_of_swin_and_tsm(name):
  config = models.tiny_config(name, num_classes=5, dtype="float32")
  model = models.build(config)
  clip = np.random.RandomState(0).randint(0, 255, (config["num_frames"], 32, 32, 3)).astype(np.uint8)
  variables = nn.unbox(models.jit_init(lambda v: model.init(jax.random.key(0), v, train=False))(
      jnp.zeros((1,) + clip.shape)))
  data = data_fixtures.smoke_config("unused").data
  maps = visualize.model_maps(model, variables, clip, data)
  assert maps.kind == "grad-cam" and maps.maps.shape[0] * maps.frames_per_step == config["num_frames"]
  assert maps.maps.min() >= 0 and maps.maps.sum() == pytest.approx(1.0, abs=1e-5)
  # A map that says something: a uniform one (no gradient reached the layer) would pass the above.
  # (TSM's tiny map is 1 x 1 per frame: its frames differ by a few percent.)
  assert np.ptp(maps.maps) > 0.01 * maps.maps.mean(), maps.maps


def synthetic_video_and_mask(directory, class_index, group, synthetic_params):
  """A synthetic video file and a video of its object mask (white where the object is)."""
  kw = dict(size=synthetic_params["size"], num_frames=synthetic_params["num_frames"],
            seed=synthetic_params["seed"], group=group, clip=1)
  name = f"v_{synthetic.ALL_CLASS_NAMES[class_index]}_g{group:02d}_c01"
  video, mask = os.path.join(directory, f"{name}.avi"), os.path.join(directory, f"{name}_mask.avi")
  synthetic.write_video(video, synthetic.render_video(class_index, **kw))
  white = np.round(synthetic.object_mask(class_index, **kw) * 255).astype(np.uint8)
  synthetic.write_video(mask, np.repeat(white[..., None], 3, axis=-1))
  return video, mask


def object_concentration(maps, steps_per_map, mask_clip):
  """Attention per unit of object area over attention per unit of background area.
  maps: [T', h, w]; mask_clip: uint8 [T, H, W, 3] (the mask video as the model's view)."""
  cover = mask_clip.mean(axis=-1) / 255.0
  t, height, width = cover.shape
  steps, h, w = maps.shape
  cover = cover.reshape(steps, steps_per_map, h, height // h, w, width // w).mean(axis=(1, 3, 5))
  return ((maps * cover).sum() / cover.sum()) / ((maps * (1 - cover)).sum() / (1 - cover).sum())


def test_visualize_writes_normalised_maps_and_overlays(run, tmp_path):
  config, workdir = run
  video, mask = synthetic_video_and_mask(str(tmp_path), 0, 1, config.data.synthetic)
  out = tmp_path / "maps"
  result = run_cli("-m", "vidtx.visualize", CONFIG, f"--checkpoint={workdir}",
                   f"--config.data.dir={config.data.dir}", f"--out={out}", video)
  assert result.returncode == 0, result.stderr
  name = os.path.splitext(os.path.basename(video))[0]
  assert f"{video}: predicted " in result.stdout
  saved = np.load(out / f"{name}.npz")
  maps, frames = saved["maps"], config.model.num_frames
  assert str(saved["kind"]) == "attention" and maps.shape == (frames // 2, 4, 4)  # tubelets, 8x8 patches
  assert maps.min() >= 0 and maps.sum() == pytest.approx(1.0, abs=1e-5)
  assert sorted(os.listdir(out / name)) == [f"frame_{i:02d}.png" for i in range(frames)]
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(out / f"{name}.gif") as gif:
    assert gif.n_frames == frames
  assert os.path.getsize(out / f"{name}.png") > 0

  # The mask video, through the same view, lines up with the object: a map that is the object's
  # own coverage concentrates on it (the geometry test_attention_trained.py relies on).
  meta_prepared = {"short_side": config.data.synthetic["short_side"]}
  mask_clip = visualize.load_clip(mask, config, meta_prepared)
  cover = mask_clip.mean(axis=-1).reshape(frames // 2, 2, 4, 8, 4, 8).mean(axis=(1, 3, 5))
  assert object_concentration(cover / cover.sum(), 2, mask_clip) > 5
  clip = visualize.load_clip(video, config, meta_prepared)
  object_pixels = mask_clip.mean(axis=-1) > 128
  background = np.median(clip[~object_pixels].astype(float), axis=0)
  contrast = lambda pixels: np.abs(pixels - background).mean()
  assert contrast(clip[object_pixels]) > 3 * contrast(clip[~object_pixels])

