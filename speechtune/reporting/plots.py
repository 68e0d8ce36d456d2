"""Matplotlib, the one way the reports draw: off-screen (Agg), a grid of axes of a given size,
saved as a PNG file (atomically) or as a data URI for the self-contained HTML page::

    fig, axes = figure(4.0, 3.0, rows=1, columns=2)    # axes[0][1] is the second plot
    save_png(fig, Path("exp/report_wer.png"))           # or: src = png_data_uri(fig)
"""
import base64
import io
from pathlib import Path
from typing import Any, Tuple

from speechtune.provenance import atomic_file


def figure(width: float, height: float, rows: int = 1, columns: int = 1, **options: Any) -> Tuple[Any, Any]:
    """A figure of rows x columns axes, each ``width`` x ``height`` inches; axes always 2-D."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False, **options)


def _png_bytes(fig: Any, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def save_png(fig: Any, path: Path, dpi: int = 110) -> None:
    """Write the figure to ``path`` (atomically) and close it."""
    data = _png_bytes(fig, dpi)
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def png_data_uri(fig: Any, dpi: int = 100) -> str:
    """The figure as a ``data:image/png;base64,...`` URI, and close it."""
    return "data:image/png;base64," + base64.b64encode(_png_bytes(fig, dpi)).decode("ascii")
