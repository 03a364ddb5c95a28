"""Config models and the one loader (README.md, "Configuration reference")."""

from broker.config.loader import load_config, parse_config
from broker.config.models import Config, EventSourceMapping, FunctionConfig

__all__ = ["Config", "EventSourceMapping", "FunctionConfig", "load_config", "parse_config"]
