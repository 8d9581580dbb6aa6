"""User-facing errors: raised for bad input, printed as one line by the entry points."""


class VidtxError(Exception):
  """Bad input (config, dataset, video, checkpoint). The message names the input and what was expected."""


def first_line(error: BaseException, limit: int = 160) -> str:
  """`Type: first non-empty line` of an error, at most `limit` characters (for one-line reports)."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return f"{type(error).__name__}: {lines[0] if lines else ''}"[:limit]
