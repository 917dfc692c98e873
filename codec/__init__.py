"""picospec.codec: the contract between edge and cloud.

The sampling transform, the sparse distribution and its exact quantisation,
keyed randomness, the verification maths, and the wire messages with their
framing. Pure: numpy and picospec's own C extension (with a numpy reference
implementation of every kernel), no I/O, no model code.
"""

from .errors import CodecError, ConfigError, KernelError, PicospecError, ProtocolError
from .rng import KeyedRandom, Purpose
from .sampling import SamplingParams
from .scheme import Scheme
from .sparse import Q_ONE, SparseDist
from .verify import Outcome, verify_block

__all__ = [
    "Q_ONE",
    "CodecError",
    "ConfigError",
    "KernelError",
    "KeyedRandom",
    "Outcome",
    "PicospecError",
    "ProtocolError",
    "Purpose",
    "SamplingParams",
    "Scheme",
    "SparseDist",
    "verify_block",
]
