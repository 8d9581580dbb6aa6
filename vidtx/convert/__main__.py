"""python -m vidtx.convert paddle|mxmark|videomae --config C (--input X | X) --output DIR [--labels FILE]"""
from absl import flags

from vidtx import cli, messages
from vidtx.convert import save


def _main(argv) -> None:
  f = flags.FLAGS
  if len(argv) == 3 and not f.input:  # the checkpoint may be given after the format
    f.input = argv.pop()
  if len(argv) != 2 or argv[1] not in save.CONVERT_FORMATS:
    raise cli.VidtxError("usage: python -m vidtx.convert paddle|mxmark|videomae --config "
                         "configs/<name>.py[:args] --input <checkpoint.pdparams | .pth> --output "
                         "<directory> [--labels <file>]")
  cli.require(f, "config", "input", "output")
  meta = save.convert_checkpoint(f.config, f.input, f.output, f.labels, fmt=argv[1])
  messages.say(f"wrote {f.output}: model {meta['model']['name']}, {len(meta['label_names'])} classes, "
               f"from {f.input}")


def main() -> None:
  cli.define_config_flag()
  flags.DEFINE_string("input", None, "PaddleVideo (.pdparams), mx-mark (.pth, Lightning) or "
                      "VideoMAE (.pth) checkpoint.")
  flags.DEFINE_string("output", None, "New directory for the converted orbax checkpoint.")
  flags.DEFINE_string("labels", None, "Label list: a name per line, '<index> <name>' lines, or a "
                      "JSON {name: index} class map (mx-mark's k400/k600_classmap.json).")
  cli.run(_main)


if __name__ == "__main__":
  main()
