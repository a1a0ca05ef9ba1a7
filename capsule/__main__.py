"""`python -m capsule` is the `capsule` command."""

from capsule.cli import main

main()
