"""`python -m qscope.cli`: the same command as `qscope`."""

from qscope.cli import main

main()
