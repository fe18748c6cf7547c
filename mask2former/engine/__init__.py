"""Training engine: launching processes, set-up, optimizer/schedule, loop, checkpoints."""

from mask2former.engine.defaults import default_argument_parser, default_setup, resolve_device
from mask2former.engine.processes import launch
from mask2former.engine.trainer import Trainer

__all__ = ["Trainer", "default_argument_parser", "default_setup", "launch", "resolve_device"]
