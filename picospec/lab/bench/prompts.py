"""The benchmark's prompt set: two styles, written for this project.

``maths``: grade-school word problems answered step by step (in the manner of
GSM8K, which the speculative-decoding literature reports on); ``code``: Python
function stubs to complete (in the manner of HumanEval). Both are sent as one
user turn through the model's chat template. Drafters agree with their targets
more on code, whose continuations are more predictable, than on prose.
"""

from __future__ import annotations

from picospec.codec.errors import ConfigError

MATHS = (
    "A warehouse robot moves 45 boxes, 6 per trip. How many trips does it need? "
    "Explain step by step.",
    "A drone flies at 12 metres per second for 3 minutes, then at 8 metres per second "
    "for 2 minutes. How far does it fly in total? Show your working.",
    "A battery holds 5,000 mAh and a robot draws 1,250 mA while driving. How many hours "
    "can it drive on a full charge, and how many minutes is that? Explain.",
    "Three sorting robots each sort 140 parcels an hour. How many parcels do they sort "
    "in a 7-hour shift? Solve it step by step.",
    "A conveyor belt is 18 metres long and moves 0.75 metres per second. How many seconds "
    "does a parcel take to travel its length? Show the calculation.",
    "A robot arm picks 4 parts a minute and has 150 parts to pick. After 20 minutes, how "
    "many parts are left, and how long until it is done? Explain.",
)

CODE = (
    "Complete this Python function:\n\n"
    "def clamp(value: float, low: float, high: float) -> float:\n"
    '    """Return value limited to the range [low, high]."""\n',
    "Complete this Python function:\n\n"
    "def moving_average(samples: list[float], window: int) -> list[float]:\n"
    '    """Return the mean of each run of `window` consecutive samples."""\n',
    "Complete this Python function:\n\n"
    "def wheel_odometry(ticks: int, ticks_per_rev: int, wheel_diameter_m: float) -> float:\n"
    '    """Return the distance in metres a wheel has rolled."""\n',
    "Complete this Python function:\n\n"
    "def is_palindrome(text: str) -> bool:\n"
    '    """Return True if text reads the same forwards and backwards, ignoring case."""\n',
    "Complete this Python function:\n\n"
    "def count_words(sentence: str) -> dict[str, int]:\n"
    '    """Return how many times each word occurs in the sentence."""\n',
    "Complete this Python function:\n\n"
    "def median(values: list[float]) -> float:\n"
    '    """Return the median of a non-empty list of numbers."""\n',
)

STYLES = {"maths": MATHS, "code": CODE}


def prompt_set(per_style: int) -> list[tuple[str, str]]:
    """(style, text) pairs: the first per_style prompts of each style, interleaved."""
    if not 1 <= per_style <= min(len(MATHS), len(CODE)):
        raise ConfigError(f"prompts per style must be in 1..{min(len(MATHS), len(CODE))}")
    return [(style, STYLES[style][i]) for i in range(per_style) for style in STYLES]
