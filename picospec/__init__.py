"""picospec: edge-cloud speculative decoding with exact output.

Subpackages: ``picospec.codec`` (the shared contract), ``picospec.edge`` (the
device side), ``picospec.cloud`` (the verifier side). The ``picospec`` command
is ``picospec.cli``.
"""

__version__ = "0.1.0"
