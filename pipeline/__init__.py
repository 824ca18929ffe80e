"""The IG audit job: `python -m pipeline [flags]`; see README.md."""

from pipeline.main import run

__all__ = ["run"]
