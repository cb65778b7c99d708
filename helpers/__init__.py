"""Deep Learning, Dissected: the thin helper package the chapters import."""
__version__ = "0.1.0"

from . import check, data, models, plots, record, training, widgets
from .profile import get_device, resolve_profile, seed_everything, setup
from .record import record as glue
from .training import EarlyStopping, History, evaluate, fit, predict

__all__ = ["check", "data", "models", "plots", "record", "training", "widgets", "setup", "seed_everything",
           "get_device", "resolve_profile", "fit", "evaluate", "predict", "EarlyStopping", "History",
           "glue", "show_source"]


def show_source(obj) -> None:
    """Display the source code of a helpers function or class, so a chapter shows the code it runs."""
    import inspect

    from IPython.display import Markdown, display

    display(Markdown(f"```python\n{inspect.getsource(obj).rstrip()}\n```"))
