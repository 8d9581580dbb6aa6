"""PP-TSM: ResNet-vd with a temporal shift in every bottleneck (PaddleVideo `ResNetTweaksTSM`
+ `ppTSMHead`); depth 50 / 101 (/ 152; 26 is a small variant for smoke tests).

Stem (ResNet-C): 3x3 convs 3->32 (stride 2), 32->32, 32->64, max-pool 3/2 pad 1. Bottlenecks
with the stride on the 3x3 conv; the first block of each stage has a projection shortcut,
average-pool 2x2/2 (ceil_mode, padding excluded from the mean) then a 1x1 conv (ResNet-D),
except `bb_0_0` (no pool). The residual branch starts with a temporal shift of the input;
the shortcut sees the unshifted input. Activation after BN and after the residual add:
leaky ReLU (slope 0.01) by default. Head: per-frame global average pool, dropout, mean over
frames, fc. The shift uses the clip's own T (Paddle's `num_seg`); `num_frames` is the nominal
clip length (configs, FLOP counts). Paddle calls temporal_shift with ratio 1/num_seg, which is
`shift_ratio`'s default 1/8 for every published (8-segment) config.
`width` (64) scales every layer (stem width/2, width/2, width; stage s width * 2**s).

Parameter names (Paddle `backbone.X` -> ours; `._conv.weight` -> `/conv/kernel` (HWIO),
`._batch_norm.{weight,bias}` -> `/bn/{scale,bias}` (params), `._batch_norm.{_mean,_variance}`
-> `/bn/{mean,var}` (batch_stats)): conv1_1, conv1_2, conv1_3, bb_{s}_{i}/{conv0,conv1,conv2,short};
head `head.fc.{weight [2048,C], bias}` -> head/fc/{kernel, bias}.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidtx.models import explain, vit
from vidtx.models.family import Family, Published

BN_MOMENTUM = 0.9  # running = 0.9 * running + 0.1 * batch, as Paddle's BatchNorm
# depth -> bottlenecks per stage; 26 is a small variant for smoke tests and CPU demos.
STAGE_BLOCKS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
SHIFT_DIRECTIONS = ("paddle", "original")
ACTIVATIONS = {"leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01), "relu": jax.nn.relu}


def temporal_shift(x: jax.Array, num_frames: int, ratio: float = 0.125,
                   direction: str = "paddle") -> jax.Array:
  """Shifts channels along time with zero fill. x: [B*T, H, W, C] (frames of a video consecutive).

  'paddle' (F.temporal_shift): channels [0, C*r) take x[t-1], [C*r, 2C*r) take x[t+1].
  'original' (mit-han-lab TSM): the mirror, [0, C*r) take x[t+1], [C*r, 2C*r) take x[t-1].
  """
  bt, h, w, c = x.shape
  c1, c2 = int(c * ratio), int(c * 2 * ratio)
  x = x.reshape(bt // num_frames, num_frames, h, w, c)
  padded = jnp.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
  prev, nxt = padded[:, :num_frames], padded[:, 2:]
  first, second = (prev, nxt) if direction == "paddle" else (nxt, prev)
  out = jnp.concatenate([first[..., :c1], second[..., c1:c2], x[..., c2:]], axis=-1)
  return out.reshape(bt, h, w, c)


def avg_pool_ceil(x: jax.Array) -> jax.Array:
  """2x2 / stride 2 average pool with ceil_mode, partial windows averaged over valid pixels
  (Paddle AvgPool2D(2, 2, ceil_mode=True), exclusive). x: [N, H, W, C]."""
  pad = ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0))
  window, strides = (1, 2, 2, 1), (1, 2, 2, 1)
  zero = np.zeros((), x.dtype)  # a concrete init value, so JAX picks the differentiable window sum
  total = jax.lax.reduce_window(x, zero, jax.lax.add, window, strides, pad)
  ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
  count = jax.lax.reduce_window(ones, zero, jax.lax.add, window, strides, pad)
  return total / count


class ConvBN(nn.Module):
  """[avg-pool] -> conv (no bias, 'same' padding (k-1)//2) -> BatchNorm -> [activation]."""
  features: int
  kernel: int
  stride: int = 1
  act: bool = True
  pool: bool = False
  activation: str = "leaky_relu"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    if self.pool:
      x = avg_pool_ceil(x)
    p = (self.kernel - 1) // 2
    x = nn.Conv(
        self.features, (self.kernel, self.kernel), strides=self.stride, padding=((p, p), (p, p)),
        use_bias=False, dtype=self.dtype, param_dtype=jnp.float32, name="conv",
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
            (None, None, "conv_in", "conv_out")))(x)
    x = nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=1e-5, dtype=self.dtype,
        param_dtype=jnp.float32, name="bn",
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))(x)
    return ACTIVATIONS[self.activation](x) if self.act else x


class Bottleneck(nn.Module):
  """Shifted bottleneck (`bb_s_i`); x: [B*T, H, W, Cin] -> [B*T, H/stride, W/stride, 4*width]."""
  width: int
  stride: int
  num_frames: int
  projection: bool
  pool_shortcut: bool
  shift_ratio: float = 0.125
  shift_direction: str = "paddle"
  activation: str = "leaky_relu"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    conv = lambda *a, name, **k: ConvBN(*a, activation=self.activation, dtype=self.dtype, name=name, **k)
    y = temporal_shift(x, self.num_frames, self.shift_ratio, self.shift_direction)
    y = conv(self.width, 1, name="conv0")(y, train=train)
    y = conv(self.width, 3, self.stride, name="conv1")(y, train=train)
    y = conv(4 * self.width, 1, act=False, name="conv2")(y, train=train)
    short = x
    if self.projection:
      short = conv(4 * self.width, 1, act=False, pool=self.pool_shortcut, name="short")(x, train=train)
    y = ACTIVATIONS[self.activation](short + y)
    return vit.constrain(y, "act_batch", None, None, "act_embed")


class TSM(nn.Module):
  """video [B, T, H, W, 3] -> logits [B, num_classes] (float32). Defaults: PP-TSM R50, 8x224."""
  num_classes: int = 400
  num_frames: int = 8
  image_size: int = 224
  dtype: str = "bfloat16"
  depth: int = 50
  width: int = 64
  dropout_rate: float = 0.5
  shift_ratio: float = 0.125
  shift_direction: str = "paddle"
  activation: str = "leaky_relu"
  remat: str = "none"  # set from config.train.remat by the trainer (vit.REMAT_POLICIES)

  @nn.compact
  def __call__(self, video, *, train: bool):
    vit.check_video(video, "tsm")
    vit.check_choice("tsm", "depth", self.depth, sorted(STAGE_BLOCKS))
    vit.check_choice("tsm", "shift_direction", self.shift_direction, SHIFT_DIRECTIONS)
    vit.check_choice("tsm", "activation", self.activation, sorted(ACTIVATIONS))
    dtype = vit.compute_dtype(self.dtype)
    b, t, h, w, _ = video.shape
    x = vit.constrain(video.astype(dtype), "act_batch", "act_time", None, None, None)
    x = x.reshape(b * t, h, w, 3)
    stem = lambda f, s, name: ConvBN(f, 3, s, activation=self.activation, dtype=dtype, name=name)
    x = stem(self.width // 2, 2, "conv1_1")(x, train=train)
    x = stem(self.width // 2, 1, "conv1_2")(x, train=train)
    x = stem(self.width, 1, "conv1_3")(x, train=train)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for s, blocks in enumerate(STAGE_BLOCKS[self.depth]):
      width = self.width * 2**s
      for i in range(blocks):
        x = vit.remat_block(Bottleneck, self.remat)(
                       width, 2 if i == 0 and s > 0 else 1, t, projection=i == 0,
                       pool_shortcut=s > 0, shift_ratio=self.shift_ratio,
                       shift_direction=self.shift_direction, activation=self.activation,
                       dtype=dtype, name=f"bb_{s}_{i}")(x, train=train)
    x = nn.Dropout(self.dropout_rate)(x.mean(axis=(1, 2)), deterministic=not train)
    x = x.reshape(b, t, -1).mean(axis=1)
    return vit.Head(self.num_classes, stddev=0.01, truncated=False, dtype=dtype, name="head")(x)


def grad_cam_map(model: TSM, variables, video, *, data_config=None) -> explain.Maps:
  """Grad-CAM of the predicted class on the last stage's output.  video: float [1, T, H, W, 3]."""
  last = f"bb_3_{STAGE_BLOCKS[model.depth][3] - 1}"
  return explain.grad_cam_maps(model, variables, video, (last,))


_R8 = dict(num_classes=400, num_frames=8, image_size=224)
FAMILY = Family(
    module=TSM,
    tiny={"default": dict(num_frames=4, image_size=32, depth=26, width=8),
          "original_relu": dict(num_frames=4, image_size=32, depth=26, width=8,
                                shift_direction="original", activation="relu")},
    published=(
        Published("PP-TSM R50 8x224", dict(_R8, depth=50), params=24.3e6, gmacs=33.0,
                  source="mmaction2 TSM-R50 metafile (plain ResNet-50 7x7 stem, not -vd)"),
        Published("PP-TSM R101 8x224", dict(_R8, depth=101), None, None,
                  source="not published (torchvision ResNet-101 x 8 frames: 7.8 GMACs x 8 = "
                  "62.6, plain stem)"),
    ),
    bn_momentum=BN_MOMENTUM,
    # Its own logical names: conv kernels' input / output channels (the output ones over fsdp).
    axis_rules=(("conv_out", "fsdp"),),
    # PaddleVideo's ConvBNLayer names its parts `_conv` and `_batch_norm`; `bb_0_0` is no list.
    paddle_lists=(),
    paddle_renames={"conv": "_conv", "bn": "_batch_norm"},
    explain=grad_cam_map,
)
