"""picospec.runtime: what runs on a robot or in the cloud besides the two sides' own code.

The QUIC transport and its TLS helpers, the llama.cpp adapter (the one module
that imports ``llama_cpp``), model provisioning from PyPI packages, and the
command-line values both sides parse. Never imports ``picospec.lab``.
"""
