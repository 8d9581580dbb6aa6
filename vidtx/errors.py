"""User-facing errors: raised for bad input, printed as one line by the entry points."""


class VidtxError(Exception):
  """Bad input (config, dataset, video, checkpoint). The message names the input and what was expected."""
