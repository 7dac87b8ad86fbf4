"""The license, in the form the building setuptools knows (everything else is pyproject.toml).

PEP 639's license expression (`License-Expression: Apache-2.0`) needs setuptools 77; Debian
bookworm's is 66, whose pyproject.toml schema refuses it. Rather than raise the floor (a
Debian build would then fetch setuptools from PyPI) or keep the TOML table form that
setuptools 77 and later deprecate, `license` is dynamic and given here: an expression where
setuptools takes one, the plain License field before.
"""

import setuptools

if int(setuptools.__version__.split(".")[0]) >= 77:
    setuptools.setup(license_expression="Apache-2.0")
else:
    setuptools.setup(license="Apache-2.0")
