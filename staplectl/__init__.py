"""staplectl: the operator's front end (Typer CLI, Textual dashboard) over engine/."""

__version__ = "0.1.0"
