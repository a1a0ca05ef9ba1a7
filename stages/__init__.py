"""The trio shell: every await, subprocess, file, clock and psutil call lives here.

It is installed as `capsule.stages`: the folder stays at the repository's top level (the layout docs/architecture.md
draws), and `capsule/stages` is a symbolic link to it, so Python, setuptools (which follows the link into
the wheel), mypy and import-linter all see one package tree with one top-level name, `capsule`.
"""
