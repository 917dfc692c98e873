"""picospec.cloud: the verifier side.

Verifier backends (llama.cpp on CPU by default; torch and TensorRT-LLM for
GPUs), the cloud session, the QUIC server and its scheduler. Imports
``picospec.codec``, never ``picospec.edge``.
"""
