"""``python -m pipeline.cli``: the dw-pipe command line."""

from pipeline.cli import main

main()
