"""A test-only plugin (--plugins=tests.plugin_advise_toy): the advisor's trials become the toy's (tests.advise_toy).

So `python -m experiments.advise` itself, its flags, exit status and last line, can be tested in seconds.
"""

from tests import advise_toy

advise_toy.install()
