"""Shared look of the docked widgets."""

from __future__ import annotations

from typing import Any

MAX_WIDTH = 470  # pixels: a docked widget leaves the canvas most of the window


def plain_cells(table: Any) -> None:
    """Show a magicgui Table's cells as given (its default delegate rewrites numbers to 4 decimals)."""
    from qtpy.QtWidgets import QStyledItemDelegate

    table.native.setItemDelegate(QStyledItemDelegate(table.native))


def wrap_name(name: str) -> str:
    """A model name on several lines, for a narrow table header ("U-Net d4w16\nval Dice 0.9\n> ptq")."""
    return name.replace(", ", "\n").replace(" > ", "\n> ")
