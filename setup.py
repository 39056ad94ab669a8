"""Packaging glue that pyproject.toml cannot say: the folder app/ installs as the package `qscope` (with
templates/ and static/ as its subpackages `qscope.templates` and `qscope.static`), and every package found under
app/ is listed under its installed name."""

from setuptools import find_packages, setup

packages = ["qscope", *(f"qscope.{p}" for p in find_packages("app")), "qscope.templates", "qscope.static"]
setup(
    packages=packages,
    package_dir={"qscope": "app", "qscope.templates": "templates", "qscope.static": "static"},
)
