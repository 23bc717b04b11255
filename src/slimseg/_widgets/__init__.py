"""napari widgets: the only code in slimseg that imports napari, magicgui or Qt."""
