"""bf16 end to end: every matmul and convolution of a bf16 model's train step takes bf16 operands."""
import re

import jax
import pytest

from vidtx import bench_step, sharding, trainer


def _dot_operand_types(stablehlo: str) -> list[tuple[str, str]]:
  """(op, operand element types) of every dot_general / convolution in a StableHLO module."""
  found = []
  for line in stablehlo.splitlines():
    match = re.search(r"stablehlo\.(dot_general|convolution)\b.*:\s*\((.*?)\)\s*->", line)
    if match:
      types = re.findall(r"tensor<[^>]*?x?([a-z]+[0-9]+)>", match[2])
      found.append((match[1], ",".join(types)))
  return found


@pytest.mark.parametrize("module,arg", [("timesformer_k400", ""), ("videoswin_k400", "variant=tiny"),
                                        ("vivit_k400", ""), ("pptsm_k400", "depth=50")])
def test_bf16_train_step_has_no_float32_matmul_or_convolution(module, arg):
  """Every matmul and convolution of a bf16 model's train step (forward and backward) takes
  bf16 operands: the program JAX hands to XLA, before a backend may widen bf16 on the CPU."""
  config = bench_step.load_config(module, ",".join(filter(None, [arg, "smoke=True"])))
  config.model.dtype = "bfloat16"
  mesh = sharding.make_mesh(config.mesh)
  rng = jax.random.key(0)
  model, schedule, tx, _ = trainer.model_and_optimizer(config, 10, 1, rng)
  state, _ = trainer.create_train_state(model, config.model, tx, mesh, sharding.rules(config), rng,
                                        abstract=True)  # shapes only: nothing initialised or compiled
  size, frames = config.model.image_size, config.model.num_frames
  batch = {"video": jax.ShapeDtypeStruct((8, frames, size, size, 3), jax.numpy.uint8),
           "label": jax.ShapeDtypeStruct((8,), jax.numpy.int32)}
  step = jax.jit(trainer.make_train_step(model, tx, schedule, config, 1, mesh))
  text = step.lower(state, batch, rng, None).as_text()
  assert bench_step.saved_activation_bytes(model, state, batch["video"], rng) > 0  # BatchNorm too
  ops = _dot_operand_types(text)
  assert len(ops) > 10
  widened = [op for op in ops if "f32" in op[1]]
  assert not widened, f"{len(widened)} of {len(ops)} matmuls/convolutions take float32: {widened[:5]}"
