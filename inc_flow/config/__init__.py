"""What a config may say: sections, checks, tables of INC names, yaml io (imports no torch)."""

from inc_flow.config.sections import Config
from inc_flow.config.yamlio import load_yaml

__all__ = ["Config", "load_yaml"]
