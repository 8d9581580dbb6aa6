"""python -m vidtx.convert paddle --config C --input X.pdparams --output DIR [--labels LIST]"""
from absl import flags

from vidtx import cli, messages
from vidtx.convert import engine


def _main(argv) -> None:
  if len(argv) != 2 or argv[1] != "paddle":
    raise cli.VidtxError("usage: python -m vidtx.convert paddle --config configs/<name>.py[:args] "
                         "--input <checkpoint.pdparams> --output <directory> [--labels <label list>]")
  f = flags.FLAGS
  cli.require(f, "config", "input", "output")
  meta = engine.convert_paddle(f.config, f.input, f.output, f.labels)
  messages.say(f"wrote {f.output}: model {meta['model']['name']}, {len(meta['label_names'])} classes, "
               f"from {f.input}")


def main() -> None:
  cli.define_config_flag()
  flags.DEFINE_string("input", None, "PaddleVideo checkpoint (.pdparams).")
  flags.DEFINE_string("output", None, "New directory for the converted orbax checkpoint.")
  flags.DEFINE_string("labels", None, "Label list: a name per line, or '<index> <name>' lines.")
  cli.run(_main)


if __name__ == "__main__":
  main()
