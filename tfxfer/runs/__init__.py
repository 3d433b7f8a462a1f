"""Runs as one concept: a run's spec and id (`spec`), what its directory holds (`layout`), its
result record (`records`) and a finished run read back from disk (`finished`). Below training,
which writes runs, and everything that reads them."""
