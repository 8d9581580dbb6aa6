"""python -m vidtx.export --config C --checkpoint CKPT --out DIR [--batch N|dynamic] [--formats ...]

Writes the checkpoint's inference function as StableHLO, a TF SavedModel and ONNX, with
export.json (vidtx/export/__init__.py, docs/export.md). `--benchmark` then times every written
format at --bench_batches (without --config: the export already in --out); without --checkpoint
the weights are random (timing only).
"""
from absl import flags

from vidtx import cli, export, messages

cli.define_config_flag()
flags.DEFINE_string("checkpoint", None, "Workdir, checkpoint directory or step directory (what eval.py "
                    "takes: trained, SWA or converted).")
flags.DEFINE_string("out", None, "New directory for the exported files and export.json.")
flags.DEFINE_string("batch", export.DYNAMIC, "'dynamic' (a symbolic batch dimension) or a fixed batch size.")
flags.DEFINE_string("formats", ",".join(export.FORMATS), "Comma-separated: " + ", ".join(export.FORMATS))
flags.DEFINE_string("platforms", ",".join(export.PLATFORMS), "StableHLO / SavedModel lowering platforms.")
flags.DEFINE_bool("verify", True, "Run every written file once and compare it with the Flax model.")
flags.DEFINE_bool("benchmark", False, "Time the exported formats (videos/s, latency) on this machine.")
flags.DEFINE_string("bench_batches", "1,8", "With --benchmark: the batch sizes.")
flags.DEFINE_float("bench_seconds", 3.0, "With --benchmark: timed seconds per format and batch size.")


def _config_source(flag_values) -> dict:
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  holder = flag_values["config"]
  return {"config": config_flags.get_config_filename(holder),
          "overrides": {k: v for k, v in config_flags.get_override_values(holder).items()}}


def main(argv) -> None:
  if len(argv) > 1:
    raise cli.VidtxError(f"unexpected arguments {argv[1:]}; usage: {export.EXPORT_COMMAND}")
  f = flags.FLAGS
  cli.require(f, "out")
  if f.config is None:
    if not f.benchmark:
      cli.require(f, "config", "checkpoint")
    if f.checkpoint:
      raise cli.VidtxError("--checkpoint needs --config (the model and test protocol it was trained with)")
  else:
    cli.require(f, "config")  # and that the file loaded
    if f.checkpoint is None:
      if not f.benchmark:
        cli.require(f, "checkpoint")
      messages.warn("no --checkpoint: random weights, for timing only")
    export.export(f.config, f.checkpoint, f.out, batch=f.batch, formats=f.formats,
                  platforms=[p for p in f.platforms.split(",") if p], config_source=_config_source(f),
                  verify=f.verify)
  if f.benchmark:
    from vidtx.export import bench  # pylint: disable=g-import-not-at-top
    batches = [export.parse_batch(b) for b in f.bench_batches.split(",") if b]
    bench.print_table(bench.benchmark(f.out, batches=batches, seconds=f.bench_seconds))


if __name__ == "__main__":
  cli.run(main)
