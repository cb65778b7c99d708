"""Self-checks for the exercises: a friendly verdict on a student's function, never the answer itself.

Each check runs the student's function on small cases, compares it with a reference and prints one line
per finding: what is right, what is off and by how much, and a hint about the concept (not the code).
A crash, a wrong type or a wrong shape becomes advice, not a stack trace. Every check returns True or
False. Checks that take a model hand the student's function a fresh small model in *train* mode, with
BatchNorm, Dropout and gradients already in its parameters' `.grad`, and verify that the function left
all of that as it found it.

The framework is in `grading`; each chapter's checks are in `chNN` (its `__all__`), next to the correct
`SOLUTIONS` and the typical `MISTAKES` the tests hold them to. Chapter modules are found here
automatically: a new chapter adds its own module and touches nothing else.
"""
import importlib
import pkgutil

from .grading import FAIL, PASS, Case, Mistake, ModelCase, attempt, compare, verdict

CHAPTERS = tuple(importlib.import_module(f"{__name__}.{module.name}")
                 for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name)
                 if module.name.startswith("ch"))
MISTAKES: list[Mistake] = [mistake for chapter in CHAPTERS for mistake in chapter.MISTAKES]
SOLUTIONS: dict = {name: fns for chapter in CHAPTERS for name, fns in chapter.SOLUTIONS.items()}

__all__ = ["PASS", "FAIL", "verdict", "attempt", "compare", "Case", "ModelCase", "Mistake"]
for _chapter in CHAPTERS:  # helpers.check.<exercise>, whichever chapter module defines it
    globals().update({name: getattr(_chapter, name) for name in _chapter.__all__})
    __all__ += _chapter.__all__
