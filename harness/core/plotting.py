"""matplotlib, headless (Agg), and one way to save a figure: every plot of the project goes through here."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 110


def save(fig, path: Path, tight: bool = True) -> str:
    """Lay out (unless the caller did), write at DPI and close ``fig``; returns the path as a string."""
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return str(path)
