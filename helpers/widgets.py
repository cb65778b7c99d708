"""Interactive controls (ipywidgets) that always come with a static fallback figure."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import matplotlib.pyplot as plt
from IPython.display import display


def static_panels(draw: Callable[[Any, plt.Axes], None], values: Sequence[Any], label: str,
                  ncols: int = 4, size: float = 3.0, caption: str | None = None) -> plt.Figure:
    """The fallback: one panel per value, drawn by draw(value, ax) - what the book and papermill show."""
    from .plots import banner

    ncols = min(ncols, len(values))
    nrows = -(-len(values) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat[len(values):]:
        ax.axis("off")
    for value, ax in zip(values, axes.flat):
        draw(value, ax)
        ax.set_title(f"{label} = {value:g}" if isinstance(value, (int, float)) else f"{label} = {value}",
                     fontsize=9)
    fig.tight_layout()
    return banner(fig, caption)


def interactive(figure: Callable[..., plt.Figure], controls: Mapping[str, Any], draw_now: bool = True) -> None:
    """Live notebook only: `controls` (ipywidgets, by keyword) above an area showing figure(**their values), redrawn on change.

    draw_now=False draws nothing until a control changes (the static figure shown before stands
    for the first view), so that headless runs (papermill, nbval, the book build) compute nothing.
    Without ipywidgets installed this does nothing: the static figure is the whole output.
    """
    try:
        import ipywidgets as widgets
    except ImportError:
        return
    from .plots import show

    output = widgets.Output()

    def redraw(change: Any = None) -> None:
        with output:
            output.clear_output(wait=True)
            show(figure(**{name: control.value for name, control in controls.items()}))

    for control in controls.values():
        control.observe(redraw, names="value")
    if draw_now:
        redraw()
    note = "" if draw_now else " change a control to draw"
    display(widgets.VBox([widgets.HTML(f"<i>Interactive version (live notebook only):{note}</i>"),
                          widgets.HBox(list(controls.values())), output]))


def slider(draw: Callable[[Any, plt.Axes], None], values: Sequence[Any], label: str,
           static_values: Sequence[Any] | None = None, caption: str | None = None,
           size: float = 3.0) -> None:
    """Show the static panels, then (in a live notebook) a slider over `values` redrawing one panel."""
    from .plots import show

    show(static_panels(draw, static_values or values, label, size=size, caption=caption))
    try:
        import ipywidgets as widgets
    except ImportError:
        return

    def figure(value: Any) -> plt.Figure:
        fig, ax = plt.subplots(figsize=(size * 1.5, size * 1.5))
        draw(value, ax)
        return fig

    control = widgets.SelectionSlider(options=list(values), value=values[len(values) // 2],
                                      description=label, continuous_update=False)
    interactive(figure, {"value": control})
