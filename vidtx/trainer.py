"""Training: `train_and_evaluate(config, workdir)` tells the whole story, top to bottom.

setup → data → batch plan → mesh → model, optimizer and sharded state → checkpoint
(resume, else `init_from`) → jitted steps → the loop (train, log, validate,
checkpoint, stop on NaN).
"""
from __future__ import annotations

import itertools
import math
import os
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from vidtx import checkpoint as ckpt
from vidtx import data as data_lib
from vidtx import evaluate, flops, losses, messages, models, multihost, optim, precise_bn, sharding
from vidtx.data import device as device_ops
from vidtx.errors import VidtxError


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self) -> dict:
    return {"params": self.params, "batch_stats": self.batch_stats}


class NonFiniteLoss(VidtxError):
  """The loss became NaN or infinite."""


# ----------------------------------------------------------------------------- batch plan
def batch_plan(global_batch: int, num_devices: int, process_count: int,
               device_batch_size: int | None) -> dict[str, int]:
  """How a global batch is split: per host, per device, and into accumulation steps."""
  if global_batch % num_devices:
    raise VidtxError(f"config.train.batch_size={global_batch} is not divisible by {num_devices} devices")
  per_device = global_batch // num_devices
  micro = min(per_device, device_batch_size or per_device)
  if per_device % micro:
    raise VidtxError(
        f"per-device batch {per_device} is not divisible by config.train.device_batch_size={micro}")
  return dict(global_batch=global_batch, per_host=global_batch // process_count,
              per_device=per_device, device_micro_batch=micro, accumulation_steps=per_device // micro)


# ----------------------------------------------------------------------------- model and state
def model_and_optimizer(config, num_steps: int, per_epoch: int, rng):
  """(model, schedule, tx, abstract params) of an experiment config: what a train step needs."""
  model = models.build(config.model, remat=config.train.remat, scan_blocks=config.train.scan_blocks)
  schedule = optim.make_schedule(config.optim, num_steps, per_epoch)
  abstract_params = nn.unbox(models.abstract_variables(model, config.model, rng))["params"]
  tx = optim.make_optimizer(config.optim, abstract_params, schedule, per_epoch, total_steps=num_steps,
                            block_lists=models.get_family(config.model.name).block_lists)
  return model, schedule, tx, abstract_params


def create_train_state(model, model_config, tx, mesh, rules, rng, *, abstract: bool = False):
  """Fresh state created directly in its sharded layout (never whole on one device).

  Returns (state, state_shardings); `abstract`: the state's shapes and shardings only
  (jax.ShapeDtypeStruct leaves), nothing allocated.
  """
  boxed = models.abstract_variables(model, model_config, rng)
  var_shardings = sharding.variable_shardings(boxed, mesh, rules)
  abstract_params = nn.unbox(boxed)["params"]
  # Frozen parameters (config.optim.freeze) have an empty optax.MaskedNode in the state: kept.
  frozen = lambda x: isinstance(x, optax.MaskedNode)
  opt_shardings = optax.tree_map_params(
      tx, lambda x, s: x if frozen(x) else s, jax.eval_shape(tx.init, abstract_params),
      var_shardings["params"], transform_non_params=lambda _: sharding.replicated(mesh),
      is_leaf=frozen)
  state_shardings = TrainState(step=sharding.replicated(mesh), params=var_shardings["params"],
                               batch_stats=var_shardings["batch_stats"], opt_state=opt_shardings)

  def init(r):
    variables = nn.unbox(model.init({"params": r, "dropout": r},
                                    jnp.zeros(models.dummy_video(model_config).shape), train=False))
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))

  init = models.jit_init(init, out_shardings=state_shardings)
  return (jax.eval_shape(init, rng) if abstract else init(rng)), state_shardings


# ----------------------------------------------------------------------------- train step
def mix_batch(rng, video, labels, mix_config, num_classes: int, smoothing: float, groups: int = 1):
  """Mixup / cutmix / VideoMix on the accelerator (config.train.mix.kind); soft targets [B, K].
  Partners come from the same one of `groups` device blocks of the batch (no traffic)."""
  kind = mix_config.kind
  if kind == "none":
    return video, losses.smoothed_targets(labels, num_classes, smoothing)
  if kind == "mixup":
    video, mixed = device_ops.mixup(rng, video, labels, mix_config.mixup_alpha, groups)
  elif kind == "cutmix":
    video, mixed = device_ops.cutmix(rng, video, labels, mix_config.cutmix_alpha, groups)
  elif kind == "videomix":
    video, mixed = device_ops.videomix(rng, video, labels, cutmix_prob=mix_config.cutmix_prob,
                                       mixup_alpha=mix_config.mixup_alpha,
                                       cutmix_alpha=mix_config.cutmix_alpha, groups=groups)
  else:
    raise VidtxError(f"config.train.mix.kind={kind!r}; use none, mixup, cutmix or videomix")
  return video, device_ops.mixed_targets(mixed, num_classes, smoothing)


def make_model_inputs(config, groups: int = 1):
  """(rng, uint8 video [B, T, H, W, 3], labels [B]) -> (float video as the model receives it,
  soft targets [B, K]): colour jitter, normalisation and mixing, as the train step does them.
  `groups`: the device blocks of the batch (sharding.batch_shards), where mixing partners come from."""
  data, num_classes = config.data, config.model.num_classes
  smoothing = float(config.train.label_smoothing)
  mix = config.train.mix
  jitter = {k: float(v) for k, v in config.train.color_jitter.items()}

  def model_inputs(rng, video, labels):
    if any(jitter.get(k) for k in ("brightness", "contrast", "saturation", "hue")):
      # Its own key, so that switching it on leaves the mixing and dropout draws as they were.
      video = device_ops.color_jitter(jax.random.fold_in(rng, 7), video, **jitter)
    video = device_ops.normalize(video, data.mean, data.std)
    mix_rng, _ = jax.random.split(rng)
    return mix_batch(mix_rng, video, labels, mix, num_classes, smoothing, groups)

  return model_inputs


def make_train_step(model, tx, schedule, config, accumulation_steps: int, mesh, teacher=None):
  """The jitted update: colour jitter and normalise on device, accumulate gradients over
  micro-batches, apply.

  `teacher`: a frozen model whose logits on the same (mixed) clips enter the loss
  (config.distill); its variables are the step's last argument.
  """
  micro_sharding = lambda x: jax.lax.with_sharding_constraint(x, sharding.batch_sharding(mesh, x.ndim))
  model_inputs = make_model_inputs(config, sharding.batch_shards(mesh))
  if teacher is not None:
    weight = float(config.distill.weight)
    temperature = float(config.distill.temperature)
  label_free = losses.is_label_free(model)

  def micro_step(state: TrainState, batch_stats, micro, rng, teacher_variables):
    video, targets = model_inputs(rng, micro["video"], micro["label"])
    _, dropout_rng = jax.random.split(rng)
    if teacher is not None:
      teacher_logits = jax.lax.stop_gradient(teacher.apply(teacher_variables, video, train=False))

    def loss_fn(params):
      logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, video, train=True,
                                    rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
      if label_free:  # the output is the model's own per-example loss (labels unused)
        return logits.mean(), (logits, updates.get("batch_stats", batch_stats))
      loss = losses.cross_entropy(logits, targets).mean()
      if teacher is not None:
        distill = losses.distillation(logits, teacher_logits, temperature).mean()
        loss = (1.0 - weight) * loss + weight * distill
      return loss, (logits, updates.get("batch_stats", batch_stats))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    correct = 0.0 if label_free else losses.correct_topk(logits, micro["label"], 1).mean()
    return grads, batch_stats, loss, correct

  def train_step(state: TrainState, batch: dict, rng: jax.Array, teacher_variables=None):
    rng = jax.random.fold_in(rng, state.step)
    # Micro-batch i takes examples i, i+n, i+2n, ...: every micro-batch is spread over all devices.
    micro_batches = jax.tree.map(
        lambda x: jnp.swapaxes(x.reshape((-1, accumulation_steps) + x.shape[1:]), 0, 1), batch)

    def body(carry, inputs):
      grads_sum, batch_stats, loss_sum, correct_sum = carry
      index, micro = inputs
      micro = jax.tree.map(micro_sharding, micro)
      grads, batch_stats, loss, correct = micro_step(state, batch_stats, micro,
                                                     jax.random.fold_in(rng, index), teacher_variables)
      grads_sum = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grads_sum, grads)
      return (grads_sum, batch_stats, loss_sum + loss, correct_sum + correct), None

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
    carry = (zeros, state.batch_stats, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
    if accumulation_steps == 1:  # no loop: XLA-CPU runs a step inside a while loop 3-4x slower
      (grads, batch_stats, loss, correct), _ = body(carry, (0, batch))  # the one micro-batch is the batch
    else:
      (grads, batch_stats, loss, correct), _ = jax.lax.scan(
          body, carry, (jnp.arange(accumulation_steps), micro_batches))
    grads = jax.tree.map(lambda g: g / accumulation_steps, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss / accumulation_steps,
        "train_top1": correct / accumulation_steps,
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
        "lr": schedule(state.step),
    }
    if label_free:
      del metrics["train_top1"]
    return TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                      opt_state=opt_state), metrics

  return train_step


def input_preview(config, batch: dict, step_rng, step: int, accumulation_steps: int, mesh,
                  count: int = 4) -> tuple[np.ndarray, np.ndarray]:
  """The first `count` clips of step `step`'s first micro-batch as the model receives them
  (jitter and mixing with the step's own keys), de-normalised: (float [N, T, H, W, 3] in 0..1,
  soft targets [N, K]). Every process calls it (the batch is global)."""
  model_inputs = make_model_inputs(config, sharding.batch_shards(mesh))
  mean = jnp.asarray(config.data.mean, jnp.float32)
  std = jnp.asarray(config.data.std, jnp.float32)

  def preview(video, labels):
    rng = jax.random.fold_in(jax.random.fold_in(step_rng, step - 1), 0)  # as train_step's micro 0
    video, targets = model_inputs(rng, video[::accumulation_steps], labels[::accumulation_steps])
    return jnp.clip(video[:count] * std + mean, 0.0, 1.0), targets[:count]

  clips, targets = jax.jit(preview)(batch["video"], batch["label"])
  return multihost_utils.process_allgather((clips, targets), tiled=True)


# ----------------------------------------------------------------------------- helpers
def swa_variables(state: TrainState) -> dict | None:
  """The stochastic weight averaged variables, once SWA has averaged something; else None.

  BatchNorm statistics are the current ones (recompute them for the averaged weights with
  precise BN where the model has BatchNorm).
  """
  found = optim.swa_average(state.opt_state)
  if found is None or int(found[0]) == 0:
    return None
  return {"params": found[1], "batch_stats": state.batch_stats}


def steps_per_epoch(num_train_examples: int, global_batch: int) -> int:
  return max(1, num_train_examples // global_batch)


def total_steps(train_config, per_epoch: int) -> int:
  steps = optim.to_steps(train_config, "num", per_epoch)
  if steps is None:
    raise VidtxError("set config.train.num_steps or config.train.num_epochs")
  return steps


def check_train_config(train) -> None:
  """Numbers in config.train that would fail later (a division by zero, an empty batch), now."""
  for key in ("batch_size", "log_every", "checkpoint_every", "keep_checkpoints", "input_streams"):
    if train[key] < 1:
      raise VidtxError(f"config.train.{key}={train[key]} must be at least 1")
  for key in ("val_every", "precise_bn_batches", "profile_steps"):
    if train[key] < 0:
      raise VidtxError(f"config.train.{key}={train[key]} must be >= 0 (0: off)")
  for key in ("num_steps", "device_batch_size", "num_epochs"):
    if train[key] is not None and train[key] <= 0:
      raise VidtxError(f"config.train.{key}={train[key]} must be positive")


def checkpoint_meta(config, label_names: list[str], step: int, examples_done: int, streams: int,
                    prepared: dict) -> dict:
  return {
      "model": config.model.to_dict(),
      "label_names": list(label_names),
      "data": config.data.to_dict(),
      "prepared": prepared,
      "step": int(step),
      # Global: any process count dividing `streams` continues the same input (vidtx.multihost).
      "input": {"examples": int(examples_done), "streams": int(streams), "seed": int(config.seed)},
      "config": config.to_json_best_effort(),
  }


# ----------------------------------------------------------------------------- the run
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it holds checkpoints). Returns the last metrics.

  SIGTERM / SIGINT: every process stops after the same step, saves it and raises
  multihost.Stopped. A data error stops the same way (one line, progress saved).
  """
  check_train_config(config.train)
  if config.data.name != "synthetic":
    data_lib.require_prepared(config.data.dir)  # before TensorFlow loads: a one-line error
  # The data modules and clu's writers import TensorFlow; the train step itself does not need it.
  from vidtx import writers
  from vidtx.data import format as data_format
  from vidtx.data import bad_clips, integrity, pipeline, synthetic

  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  messages.set_enabled(is_main)
  if is_main:
    messages.log_to(os.path.join(workdir, "log.txt"))
  say = messages.say

  # ------------------------------------------------------------------- data
  if config.data.name == "synthetic":
    if is_main:  # one writer; the other hosts wait for it
      synthetic.ensure_synthetic_dataset(config.data.dir, **config.data.synthetic)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("synthetic dataset prepared")
  builder = data_format.builder(config.data.dir)
  label_names = integrity.label_names(config.data.dir)
  if len(label_names) != config.model.num_classes:
    raise VidtxError(f"dataset {config.data.dir} has {len(label_names)} classes but "
                     f"config.model.num_classes is {config.model.num_classes}")
  # Every split the run will read, now: a broken validation shard must not wait for step N.
  integrity.check_splits(builder, [config.data.train_split, config.data.val_split],
                         frame_index=config.data.read_sampled_frames)
  num_train = builder.info.splits[config.data.train_split].num_examples

  def split_shards(split: str) -> list[str]:
    return [str(p) for p in builder.info.splits[split].filepaths]

  prepared = data_format.read_prepare_info(config.data.dir)

  # ------------------------------------------------------------------- batch plan and mesh
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules(config)
  plan = batch_plan(config.train.batch_size, jax.device_count(), jax.process_count(),
                    config.train.device_batch_size)
  per_epoch = steps_per_epoch(num_train, plan["global_batch"])
  num_steps = total_steps(config.train, per_epoch)
  say(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind} in {jax.process_count()} "
      f"process(es), mesh {dict(mesh.shape)}; batch: global {plan['global_batch']}, per host "
      f"{plan['per_host']}, per device {plan['per_device']} = {plan['accumulation_steps']} "
      f"accumulation step(s) x {plan['device_micro_batch']}; {num_train} training videos, "
      f"{per_epoch} steps/epoch, {num_steps} steps")

  # ------------------------------------------------------------------- model, optimizer, state
  rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  model, schedule, tx, abstract_params = model_and_optimizer(config, num_steps, per_epoch, init_rng)
  state, state_shardings = create_train_state(model, config.model, tx, mesh, rules, init_rng)
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(abstract_params))
  _, forward_macs = flops.measure(model, config.model.num_frames, config.model.image_size)
  flops_per_clip = flops.train_flops_per_clip(forward_macs.total())
  peak = config.train.peak_flops_per_device or flops.peak_flops(jax.devices()[0].device_kind)
  say(f"model {config.model.name}: {num_params / 1e6:.2f}M parameters, "
      f"{forward_macs.total() / 1e9:.4g} GMACs per clip forward, compute dtype {config.model.dtype}; "
      + (f"MFU against {peak / 1e12:.0f} TFLOP/s per device" if peak else
         "MFU not shown (peak FLOP/s of this device unknown: config.train.peak_flops_per_device)"))

  # ------------------------------------------------------------------- checkpoint: resume or init_from
  checkpoints = ckpt.Checkpoints(workdir, keep=config.train.keep_checkpoints)
  checkpoint_dir = os.path.join(workdir, "checkpoints")

  def fits_this_run(meta: dict) -> None:
    ckpt.check_model_matches(meta, config.model, checkpoint_dir)
    ckpt.check_labels_match(meta.get("label_names", []), label_names, checkpoint_dir, config.data.dir)

  resumed = checkpoints.restore_newest_intact(
      ckpt.abstract(state.variables, {"params": state_shardings.params,
                                      "batch_stats": state_shardings.batch_stats}),
      ckpt.abstract({"step": state.step, "opt_state": state.opt_state},
                    {"step": state_shardings.step, "opt_state": state_shardings.opt_state}),
      fits_this_run)
  if resumed is not None:
    start_step, variables, train, meta = resumed
    state = TrainState(step=train["step"], params=variables["params"],
                       batch_stats=variables["batch_stats"], opt_state=train["opt_state"])
    examples_done, streams = multihost.input_position(meta["input"])
    multihost.check_input_streams(streams, plan["global_batch"], jax.process_count(),
                                  f"{checkpoint_dir}/{start_step}")
    say(f"resumed from {checkpoint_dir}/{start_step} (input position: {examples_done} examples "
        f"over {streams} input stream(s))")
  else:
    start_step, examples_done = 0, 0
    streams = multihost.num_input_streams(config.train.input_streams, plan["global_batch"],
                                          jax.process_count())
    if config.init_from.path:
      from vidtx import convert  # pylint: disable=g-import-not-at-top
      params = convert.init_from(config.init_from, state.variables, config.model)
      state = state.replace(params=jax.device_put(params["params"], state_shardings.params),
                            batch_stats=jax.device_put(params["batch_stats"], state_shardings.batch_stats))
      say(f"initialised from {config.init_from.path} ({config.init_from.format})")

  # ------------------------------------------------------------------- steps
  teacher, teacher_variables = None, None
  if config.distill.teacher:
    teacher, teacher_variables = evaluate.restore_teacher(config, mesh, label_names)
    say(f"distillation: teacher {config.distill.teacher} ({type(teacher).__name__}), weight "
        f"{config.distill.weight}, temperature {config.distill.temperature}")
  train_step = jax.jit(
      make_train_step(model, tx, schedule, config, plan["accumulation_steps"], mesh, teacher),
      in_shardings=(state_shardings, None, None, None),
      out_shardings=(state_shardings, None), donate_argnums=(0,))
  eval_step = evaluate.make_eval_step(model, config.data, config.eval.averaging)
  label_free = losses.is_label_free(model)

  precise_batches = config.train.precise_bn_batches
  if precise_batches and jax.tree.leaves(state.batch_stats):
    batch_stats_step = precise_bn.make_batch_stats_step(model, config.data)
    say(f"precise BN: BatchNorm statistics recomputed from {precise_batches} training batches before "
        "each validation")
  else:
    precise_batches = 0

  def to_global(local: dict) -> dict:
    return sharding.global_batch({k: v for k, v in local.items() if k not in bad_clips.KEYS}, mesh)

  def with_precise_batch_stats(variables) -> dict:
    """`variables` with BatchNorm statistics averaged over fresh training micro-batches."""
    micro_batch = plan["device_micro_batch"] * jax.device_count()
    local = multihost.train_batches(  # its own stream: the training input is untouched
        pipeline.make_train_dataset, config.data, global_batch=micro_batch,
        streams=math.gcd(streams, micro_batch), seed=config.seed + 1, examples_done=0)
    batches = map(to_global, itertools.islice(local, precise_batches))
    stats = precise_bn.precise_batch_stats(batch_stats_step, variables, batches)
    return dict(variables, batch_stats=jax.device_put(stats, state_shardings.batch_stats))

  def validate(variables) -> tuple[dict[str, float], np.ndarray]:
    """(scalars, confusion matrix) of the clip-level validation."""
    dataset = pipeline.make_eval_dataset(
        config.data, split=config.data.val_split, batch_size=evaluate.per_host_batch(config.eval.batch_size),
        num_clips=1, num_crops=1,
        process_index=jax.process_index(), process_count=jax.process_count())
    result = evaluate.run(eval_step, variables, dataset.as_numpy_iterator(), mesh,
                          num_batches=len(dataset), shards=split_shards(config.data.val_split))
    if label_free:  # no classes: the model's own loss (e.g. masked-video reconstruction)
      return {"val_loss": result["loss"]}, None
    mean_class = evaluate.class_report(result["confusion"], label_names)["mean_class_top1"]
    return {"val_top1": result["top1"], "val_top5": result["top5"], "val_loss": result["loss"],
            "val_mean_class_top1": mean_class}, result["confusion"]

  # ------------------------------------------------------------------- the loop
  bad = bad_clips.Tracker(  # on_bad_clip='skip': dropped clips counted, streams' positions kept
      config.data, multihost.process_streams(streams, jax.process_index(), jax.process_count()),
      plan["global_batch"] // streams, *bad_clips.resume_point(
          resumed[3]["input"] if resumed is not None else {}, examples_done, streams,
          jax.process_index()))
  upcoming = multihost.Upcoming(bad.batches(multihost.train_batches(
      pipeline.make_train_dataset, config.data, global_batch=plan["global_batch"], streams=streams,
      seed=config.seed, examples_done=examples_done, positions=list(bad.positions))), to_global)
  if is_main:
    writers.forget_metrics_after(os.path.join(workdir, "metrics.jsonl"), start_step)
  writer = writers.make_writer(workdir, is_main=is_main)
  if is_main and start_step < num_steps:
    writers.write_config(writer, config, start_step)
  profile_dir = os.path.join(workdir, "profile")
  if jax.process_count() > 1:  # processes on one host would write the same <host>.xplane.pb
    profile_dir = os.path.join(profile_dir, f"process_{jax.process_index()}")
  profiler = writers.StepProfiler(profile_dir, config.train.profile_steps,
                                  first_step=start_step + 2)  # after one step of warm-up (compiling)
  progress = writers.Progress(num_steps, start_step, plan["global_batch"], flops_per_clip,
                              peak * jax.device_count() if peak else None)
  pending: list[dict] = []  # device metrics of the steps since the last log
  last: dict[str, float] = {}

  def flush_metrics(step: int) -> dict[str, float]:
    """Fetches pending step metrics, stops on NaN, returns their mean."""
    fetched = jax.device_get(pending)
    pending.clear()
    means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    if not math.isfinite(means["loss"]):
      raise NonFiniteLoss(
          f"loss is {means['loss']} at step {step}: training stopped; the last good checkpoint "
          f"in {checkpoint_dir} is kept (lower config.optim.lr or set config.optim.clip_grad_norm)")
    return means

  def save(step: int) -> dict:
    meta = checkpoint_meta(config, label_names, step, examples_done, streams, prepared)
    meta["input"].update(bad.record())
    checkpoints.save(step, state.variables, {"step": state.step, "opt_state": state.opt_state}, meta)
    return meta

  say(f"training from step {start_step} to {num_steps} (input: {streams} stream(s), "
      f"{len(multihost.process_streams(streams, jax.process_index(), jax.process_count()))} per "
      f"process); metrics in {workdir}/metrics.jsonl")
  step, stop = start_step, 0
  try:
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules), multihost.StopSignals() as stops:
      upcoming.fill()
      agreed = stops.poll(upcoming.error is not None)  # read one step later, so no step waits on it
      steps = range(start_step + 1, num_steps + 1)
      if int(agreed) == multihost.INPUT_FAILED and steps:  # before any step: nothing new to save
        stop, steps = multihost.INPUT_FAILED, ()
      for step in steps:
        batch = upcoming.pop()
        bad.step()
        if step == start_step + 1:  # what the model sees: once, at the start
          clips, targets = input_preview(config, batch, step_rng, step, plan["accumulation_steps"],
                                          mesh)
          if is_main:
            writers.write_input_clips(writer, step, clips,
                                      [writers.target_caption(t, label_names) for t in targets])
        profiler.before(step, state)
        state, metrics = train_step(state, batch, step_rng, teacher_variables)
        if step == start_step + 1:  # compiled: clips/s and MFU count from the end of this call
          progress.restart(step)
        profiler.after(step, state)
        pending.append(metrics)
        examples_done += plan["global_batch"]
        upcoming.fill()
        checkpoints.check()
        stop, agreed = int(agreed), stops.poll(upcoming.error is not None)
        log_now = step % config.train.log_every == 0 or step == num_steps or stop
        val_now = step == num_steps or (not stop and config.train.val_every
                                        and step % config.train.val_every == 0)
        save_now = step == num_steps or step % config.train.checkpoint_every == 0 or stop
        if not (log_now or val_now or save_now):
          continue
        scalars = {**flush_metrics(step), **progress.rate(step), **bad.scalars()}
        if val_now and precise_batches:
          state = state.replace(batch_stats=with_precise_batch_stats(state.variables)["batch_stats"])
        swa = swa_variables(state)
        if swa is not None and precise_batches and (val_now or save_now):
          swa = with_precise_batch_stats(swa)
        meta = save(step) if save_now else None  # before validating: its failure loses nothing
        if val_now:
          try:
            validated, confusion = validate(state.variables)
            scalars.update(validated)
            if swa is not None:
              scalars.update({f"swa_{k}": v for k, v in validate(swa)[0].items()})
          except VidtxError as e:
            if meta is None:
              save(step)
            checkpoints.wait()
            raise VidtxError(f"validation at step {step} failed: {e}; training progress is saved "
                             f"in {checkpoint_dir}/{step}") from None
          if label_free:  # no best-by-top-1 checkpoint: the latest is the one to take on
            say(f"validation at step {step}: loss {scalars['val_loss']:.4f} (label-free objective)")
          else:
            say(f"validation (clip-level: 1 clip x 1 centre crop per video) at step {step}: "
                f"top-1 {scalars['val_top1']:.4f}, top-5 {scalars['val_top5']:.4f}, mean class "
                f"top-1 {scalars['val_mean_class_top1']:.4f}")
            checkpoints.save_best(step, state.variables, meta or save(step), scalars["val_top1"])
          if swa is not None and not label_free:
            say(f"validation of the SWA weights: top-1 {scalars['swa_val_top1']:.4f}, "
                f"top-5 {scalars['swa_val_top5']:.4f}")
          if is_main and confusion is not None:
            writers.write_confusion(writer, step, confusion, label_names)
        if swa is not None and save_now:
          checkpoints.save_swa(step, swa, meta)
        writer.write_scalars(step, scalars)
        last = scalars
        say(progress.line(step, scalars))
        progress.restart()
        if stop:
          break
  except BaseException as e:
    failed = True
    try:
      checkpoints.wait()  # the saves in flight still land
    except VidtxError:
      pass  # the first error is the one to report
    if not isinstance(e, VidtxError) and ckpt.no_space(e):  # metrics.jsonl or TensorBoard
      raise checkpoints.full_disk(workdir, f"writing the metrics of step {step}") from None
    raise
  else:
    failed = False
    checkpoints.wait()
  finally:
    profiler.close(step)
    checkpoints.close()
    try:
      writer.close()  # metrics.jsonl and the TensorBoard event file, also when the run failed
    except Exception as e:  # pylint: disable=broad-except
      if not ckpt.no_space(e):
        raise
      if not failed:  # else the error in flight is the one to report
        raise checkpoints.full_disk(workdir, f"writing the metrics of step {step}") from None
  if stop == multihost.INPUT_FAILED and step < num_steps:  # (batches read past the end: no matter)
    saved = (f"progress saved in {checkpoint_dir}/{step}" if step > start_step else
             f"{checkpoint_dir}/{start_step} is kept" if start_step else "nothing trained yet")
    reason = (integrity.describe_read_error(upcoming.error, split_shards(config.data.train_split))
              if upcoming.error is not None else "another process could not read its input")
    raise VidtxError(f"training input failed after step {step}: {reason}; {saved}")
  if stop and step < num_steps:
    name, exit_code = multihost.StopSignals.describe(stop)
    where = (f"checkpoint saved in {checkpoint_dir}/{step}" if step > start_step
             else "nothing new to save")
    raise multihost.Stopped(f"stopped by {name} after step {step}: {where}; run the same command to "
                            "resume", exit_code)
  swa_note = f", SWA weights in {workdir}/swa" if checkpoints.swa is not None else ""
  best_note = "" if label_free else f", best in {workdir}/best"
  say(f"done: {step} steps; checkpoints in {checkpoint_dir}{best_note}{swa_note}")
  return last
