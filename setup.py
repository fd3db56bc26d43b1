"""Package discovery, the one thing pyproject.toml cannot say alone: every package under widen_cli/ is
found (so none is left out of a wheel), and the repository's conf/ ships as widen_cli.conf with its
groups (conf/ holds no __init__.py, hence namespace discovery there)."""
from setuptools import find_namespace_packages, find_packages, setup

CONF = ["widen_cli.conf", *(f"widen_cli.conf.{group}" for group in find_namespace_packages(where="conf"))]

setup(packages=[*find_packages(include=["widen_cli", "widen_cli.*"]), *CONF],
      package_dir={"widen_cli.conf": "conf"})
