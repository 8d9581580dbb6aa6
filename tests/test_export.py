"""Export for inference: every family's converted PaddleVideo checkpoint and the trained demo ->
StableHLO, SavedModel and ONNX equal to the Flax model; predict.py --exported prints what
predict.py --checkpoint prints; bad input is one line."""
import glob
import importlib
import json
import os
import subprocess
import sys
import textwrap

from flax import traverse_util
import jax
import numpy as np
import pytest

import cli_runner
import predict
from vidtx import convert, export, models
from vidtx.errors import VidtxError
from vidtx.export import bench, formats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One seed config per family (smoke=True: tiny model, the config's own test protocol).
FAMILY_CONFIGS = {"tokshift": "tokshift_ucf101", "timesformer": "timesformer_k400", "vivit": "vivit_k400",
                  "swin": "videoswin_k400", "tsm": "pptsm_k400"}
LABELS = ["Alpha", "Bravo", "Charlie", "Delta", "Echo"]


run_cli = cli_runner.run_main  # in this process: no second import of JAX and TensorFlow


def run_process(*args):
  """`python ARGS...` in a new process: for what must not see this process's imports."""
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def one_line_error(run, *pieces):
  """The run failed with one `error: ...` line (no traceback) that names every piece."""
  lines = [line for line in run.stderr.strip().splitlines() if line.startswith("error:")]
  assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
  assert len(lines) == 1, run.stderr
  for piece in pieces:
    assert str(piece) in lines[0], lines[0]
  return lines[0]


@pytest.fixture(scope="session")
def demo_trained(trained):
  """(config, workdir): the shared trained smoke demo (conftest), SWA checkpoint included."""
  config, workdir, _ = trained
  return config, workdir


@pytest.fixture(scope="session")
def videos(smoke_data_dir):
  """Real video files written by the synthetic generator (PyAV)."""
  found = sorted(glob.glob(os.path.join(smoke_data_dir + "_videos", "videos", "*", "*.avi")))
  return [found[0], found[-1]]


def random_variables(config, seed: int) -> dict:
  """Random variables at initialisation-like scales (kernels by fan-in, BatchNorm near identity),
  so that deep models stay finite and the classes get well separated probabilities."""
  rng = np.random.default_rng(seed)

  def value(path, shape):
    noise = rng.normal(size=shape).astype(np.float32)
    if path[-1] == "kernel":
      return noise / np.sqrt(np.prod(shape[:-1]))
    if path[-1] in ("scale", "var"):
      return 1 + 0.1 * np.abs(noise)
    return 0.1 * noise if path[-1] in ("bias", "mean") else 0.02 * noise

  flat = {p: value(p, s) for p, s in convert.model_shapes(config).items()}
  variables = traverse_util.unflatten_dict(flat)
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def converted_checkpoint(config, tmp_path, seed: int = 0):
  """A random PaddleVideo .pdparams of config's model, converted as `vidtx.convert paddle` does:
  (checkpoint directory, the original variables)."""
  variables = random_variables(config, seed)
  source = str(tmp_path / "model.pdparams")
  convert.save_pdparams(convert.to_paddle(variables, config), source)
  (tmp_path / "labels.txt").write_text("".join(f"{name}\n" for name in LABELS))
  out = str(tmp_path / "converted")
  convert.convert_checkpoint(config, source, out, str(tmp_path / "labels.txt"))
  return out, variables


def flax_probabilities(config, variables, video):
  model = models.build(config.model)
  return np.asarray(jax.jit(lambda v, x: export.probabilities(model, v, x, config.data,
                                                              config.eval.averaging))(variables, video))


# ----------------------------------------------------------------------------- every family
@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
@pytest.mark.slow
def test_converted_checkpoint_of_every_family_exports_to_every_format(family, tmp_path, videos):
  config = importlib.import_module(f"configs.{FAMILY_CONFIGS[family]}").get_config("smoke=True")
  checkpoint, variables = converted_checkpoint(config, tmp_path)
  out = str(tmp_path / "exported")
  found = export.export(config, checkpoint, out, verify=False)
  assert found["formats"]["stablehlo"]["batch"] == "dynamic"
  assert all("skipped" not in found["formats"][name] for name in export.FORMATS), found["formats"]
  assert found["label_names"] == LABELS and found["model"]["name"] == family
  # jax2onnx loses the symbolic batch in the factorised encoder's reshapes (docs/export.md).
  assert found["formats"]["onnx"]["batch"] == (1 if family == "vivit" else "dynamic")

  # Each format on one input (3 videos: not the batch it was traced with) = the Flax model.
  shape = found["input"]["shape"][1:]
  video = np.random.default_rng(1).integers(0, 256, [3] + shape, dtype=np.uint8)
  expected = flax_probabilities(config, variables, video)
  for name in export.FORMATS:
    got = formats.load(out, name, found["formats"][name])(video)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=name)

  # predict: the exported files print what the checkpoint prints, for a real video file.
  from_checkpoint = predict.from_checkpoint(config, checkpoint)
  probs = predict.video_probabilities(from_checkpoint, videos[0])
  top = np.sort(probs)[::-1][:6]  # 5 printed; the 6th must not tie the 5th
  assert np.min(-np.diff(top)) > 1e-4, "classes too close to order reliably; change the seed"
  lines = predict.report(videos[0], _top(from_checkpoint, probs))
  for runtime in export.FORMATS:
    predictor = predict.from_export(out, runtime)
    probs = predict.video_probabilities(predictor, videos[0])
    assert predict.report(videos[0], _top(predictor, probs)) == lines


def _top(predictor, probs):
  from vidtx import evaluate  # pylint: disable=g-import-not-at-top
  return evaluate.top_k(probs, predictor.label_names, 5)


# ----------------------------------------------------------------------------- the trained demo
def test_demo_export_and_predict_command_lines(demo_trained, videos, tmp_path):
  config, workdir = demo_trained
  data = f"--config.data.dir={config.data.dir}"
  out = tmp_path / "demo"
  run = run_cli("-m", "vidtx.export", "--config=configs/demo.py:smoke=True", data, f"--checkpoint={workdir}",
                f"--out={out}")
  assert run.returncode == 0, run.stderr
  assert f"writing SavedModel to {out}/savedmodel" in run.stdout
  found = json.loads((out / "export.json").read_text())
  assert found["format_version"] == export.FORMAT_VERSION and found["vidtx_version"] == export.vidtx_version()
  assert found["source"]["config"] == "configs/demo.py:smoke=True"
  assert found["source"]["overrides"] == {"data.dir": config.data.dir}
  assert found["source"]["checkpoint"] == os.path.abspath(workdir)
  assert found["input"]["shape"] == [None, 2, 8, 32, 32, 3] and found["input"]["dtype"] == "uint8"
  assert found["input"]["normalisation"]["mean"] == list(config.data.mean)
  assert found["input"]["averaging"] == "score" and found["decode"]["short_side"] == 40
  for name in export.FORMATS:  # the exporter ran each file against the Flax model
    assert found["formats"][name]["max_abs_diff"] <= 1e-6, name

  checkpoint_json, exported_json = tmp_path / "checkpoint.json", tmp_path / "exported.json"
  by_checkpoint = run_cli("predict.py", "--config=configs/demo.py:smoke=True", data,
                          f"--checkpoint={workdir}", *videos, f"--output={checkpoint_json}")
  assert by_checkpoint.returncode == 0, by_checkpoint.stderr
  assert len(by_checkpoint.stdout.splitlines()) == 12
  for runtime in export.FORMATS:
    by_export = run_cli("predict.py", f"--exported={out}", f"--runtime={runtime}", *videos,
                        f"--output={exported_json}")
    assert by_export.returncode == 0, by_export.stderr
    assert by_export.stdout == by_checkpoint.stdout, runtime
  written = json.loads(exported_json.read_text())
  assert written["runtime"] == export.FORMATS[-1] and written["failures"] == []
  assert [v["path"] for v in written["videos"]] == videos
  by_ckpt = json.loads(checkpoint_json.read_text())
  for a, b in zip(written["videos"], by_ckpt["videos"]):
    assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
    np.testing.assert_allclose([t["probability"] for t in a["top"]], [t["probability"] for t in b["top"]],
                               atol=1e-6)

  # The files stand alone: StableHLO with jax alone (no vidtx), the SavedModel with plain
  # tf.saved_model.load, ONNX in onnxruntime.
  script = textwrap.dedent(f"""
      import sys, numpy as np, jax
      from jax import export
      exported = export.deserialize(bytearray(open({str(out / 'model.stablehlo')!r}, "rb").read()))
      probs = np.asarray(exported.call(np.zeros((3, 2, 8, 32, 32, 3), np.uint8)))
      assert probs.shape == (3, 5) and np.allclose(probs.sum(-1), 1, atol=1e-5)
      assert not [m for m in sys.modules if m.startswith("vidtx")]
      import tensorflow as tf
      serve = tf.saved_model.load({str(out / 'savedmodel')!r}).signatures["serving_default"]
      tf_probs = serve(video=tf.zeros((3, 2, 8, 32, 32, 3), tf.uint8))["probabilities"].numpy()
      import onnxruntime as ort
      session = ort.InferenceSession({str(out / 'model.onnx')!r}, providers=["CPUExecutionProvider"])
      onnx_probs = session.run(None, {{"video": np.zeros((3, 2, 8, 32, 32, 3), np.uint8)}})[0]
      assert np.allclose(tf_probs, probs, atol=1e-6) and np.allclose(onnx_probs, probs, atol=1e-6)
      print("ok")
      """)
  standalone = run_process("-c", script)
  assert standalone.stdout.strip() == "ok", standalone.stderr


def test_swa_checkpoint_with_a_fixed_batch(demo_trained, videos, tmp_path):
  config, workdir = demo_trained
  swa = os.path.join(workdir, "swa")
  out = str(tmp_path / "fixed")
  found = export.export(config, swa, out, batch=2, formats="stablehlo,savedmodel")
  assert sorted(found["formats"]) == ["savedmodel", "stablehlo"] and found["input"]["shape"][0] == 2
  assert not os.path.exists(os.path.join(out, "model.onnx"))
  checkpoint = predict.from_checkpoint(config, swa)
  video = np.random.default_rng(2).integers(0, 256, [3] + found["input"]["shape"][1:], dtype=np.uint8)
  expected = np.concatenate([checkpoint.run(video[i:i + 1]) for i in range(3)])
  for name in found["formats"]:  # 3 videos through a batch-2 function: padded, in two calls
    np.testing.assert_allclose(formats.load(out, name, found["formats"][name])(video), expected,
                               rtol=1e-5, atol=1e-6)
  rows = bench.benchmark(out, batches=(1, 2), seconds=0.0)
  assert [(r["format"], r["batch"]) for r in rows] == [
      ("stablehlo (batch-2 file, padded)", 1), ("stablehlo", 2), ("savedmodel (batch-2 file, padded)", 1),
      ("savedmodel", 2)]
  assert all(r["videos_per_s"] > 0 for r in rows)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_is_one_line(demo_trained, videos, tmp_path):
  config, workdir = demo_trained
  data = f"--config.data.dir={config.data.dir}"
  other_model = run_cli("-m", "vidtx.export", "--config=configs/demo.py:smoke=True", data,
                        f"--checkpoint={workdir}", "--config.model.hidden_size=48", f"--out={tmp_path}/x")
  one_line_error(other_model, "another model", "hidden_size")
  assert not os.path.exists(tmp_path / "x" / "export.json")

  out = tmp_path / "demo"
  export.export(config, workdir, str(out), formats="stablehlo", verify=False)
  contract = json.loads((out / "export.json").read_text())
  not_a_video = tmp_path / "notes.avi"
  not_a_video.write_text("this is not a video")
  run = run_cli("predict.py", f"--exported={out}", videos[0], str(not_a_video), f"--output={tmp_path}/p.json")
  one_line_error(run, not_a_video)
  assert run.stdout.startswith(f"{videos[0]}:")  # the good video is still classified
  written = json.loads((tmp_path / "p.json").read_text())
  assert len(written["videos"]) == 1 and written["failures"][0]["path"] == str(not_a_video)
  one_line_error(run_cli("predict.py", f"--exported={out}", "--runtime=onnx", videos[0]),
                 "has no onnx model", "--runtime stablehlo")

  (out / "export.json").write_text(json.dumps(dict(contract, format_version=0, vidtx_version="0.0.1")))
  one_line_error(run_cli("predict.py", f"--exported={out}", videos[0]), str(out), "format 0", "export the "
                 "checkpoint again")
  os.remove(out / "export.json")
  one_line_error(run_cli("predict.py", f"--exported={out}", videos[0]), str(out), "no export.json")

  with pytest.raises(VidtxError, match="--batch"):
    export.parse_batch("0")
  with pytest.raises(VidtxError, match="choose among"):
    export.parse_formats("stablehlo,tflite")
  with pytest.raises(VidtxError, match="not empty"):
    export.export(config, workdir, str(out), formats="stablehlo")
  with pytest.raises(VidtxError, match="does not exist"):
    export.export(config, str(tmp_path / "nowhere"), str(tmp_path / "y"))
  # A video whose views do not fit the contract (here: the contract says 3 clips).
  contract["input"]["shape"][1] = 3
  (out / "export.json").write_text(json.dumps(contract))
  with pytest.raises(VidtxError, match="exported model takes"):
    predict.video_probabilities(predict.from_export(str(out), "stablehlo"), videos[0])


def test_export_and_stablehlo_path_import_without_tensorflow():
  script = ("import sys; import vidtx.export, vidtx.export.formats, vidtx.export.bench; "
            "assert not [m for m in sys.modules if m.startswith(('tensorflow', 'onnx', 'jax2onnx'))]")
  run = run_process("-c", script)
  assert run.returncode == 0, run.stderr
