"""Built-in prompt sets, by name. Each holds prompts and, for the steer it was made for, probe texts that express
the concept: qscope.steer.evaluate.suggest finds the feature that separates the probes from the prompts on the
model at hand. They were chosen on mini-Qwen (the embedded default, trained on Python's sources and docs,
fortunes and the Jargon File), where that steer measurably works (see the README's figures)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PromptSet:
    name: str
    description: str
    prompts: list[str]
    suggestion: str = ""  # the steer it was made for, in words
    probe: list[str] = field(default_factory=list)  # texts that express the concept (empty: no steer suggested)
    steer_mode: str = "add"  # the suggested feature's mode
    mode: str = "increase"  # the goal: increase or decrease the concept


PROSE = PromptSet(
    "prose",
    "Short openings of everyday English prose (any model).",
    [
        "The weather this morning was",
        "My favourite thing about the city is",
        "She opened the letter and",
        "The old man walked slowly to the",
        "When we arrived at the station, the",
        "The best advice I ever got was",
        "After dinner we usually",
        "The history of the village begins with",
        "He looked out of the window and saw",
        "Every summer the children",
        "The meeting was postponed because",
        "In the middle of the night, the phone",
    ],
)

PYTHON = [
    "def read_config(path):\n    with open(path) as f:\n        return json.load(f)\n",
    "for i, item in enumerate(items):\n    if item is None:\n        continue\n    result.append(item)\n",
    "class Parser(object):\n    def __init__(self, text):\n        self.text = text\n        self.pos = 0\n",
    "import os\nimport sys\n\ndef main(argv=None):\n    args = parse_args(argv)\n    return 0\n",
    "    try:\n        value = int(s)\n    except ValueError:\n        raise TypeError('expected an int')\n",
    "if __name__ == '__main__':\n    sys.exit(main())\n",
]

PROSE_TO_CODE = PromptSet(
    "prose-to-code",
    "The prose openings, to be steered into Python code.",
    PROSE.prompts,
    suggestion="add the feature that fires on Python code and not on prose",
    probe=PYTHON,
)

QUOTES = PromptSet(
    "quote-attribution",
    'Openings of short sayings, which mini-Qwen tends to finish with an attribution line ("-- Author").',
    [
        "A friend in need is",
        "The only thing we have to fear is",
        "Never put off till tomorrow what",
        "It is better to remain silent and",
        "The early bird gets the worm, but",
        "Life is what happens to you while",
        "A computer lets you make more mistakes than",
        "Nothing is so permanent as",
        "The trouble with the world is that",
        "If you want to make an apple pie from scratch,",
        "Experience is the name everyone gives to",
        "There are two kinds of people in the world:",
    ],
    suggestion="suppress (a negative add of) the feature that fires on attribution lines",
    probe=[
        "Democracy is a device that insures we shall be governed no better than\nwe deserve.\n"
        "\t\t-- George Bernard Shaw\n",
        '"Life is a garment we continuously alter, but which never seems to fit."\n\t\t-- David McCord\n',
        "Liberty don't work as good in practice as it does in speeches.\n\t\t-- The Best of Will Rogers\n",
        "Whenever people agree with me I always feel I must be wrong.\n\t\t-- Oscar Wilde\n",
        "A little learning is a dangerous thing.\n\t\t-- Alexander Pope\n",
        "I have not failed. I've just found ten thousand ways that won't work.\n\t\t-- Thomas Edison\n",
    ],
    mode="decrease",
)

SETS: dict[str, PromptSet] = {s.name: s for s in (PROSE_TO_CODE, QUOTES, PROSE)}


def builtin() -> dict[str, list[str]]:
    """{name: prompts} of every built-in set."""
    return {name: list(s.prompts) for name, s in SETS.items()}
