from .wrapper import (MSCLAP, VERSIONS, CheckpointError, MSCLAPModel, convert_checkpoint, detect_version,
                      load_state_dict)

__all__ = ["MSCLAP", "MSCLAPModel", "CheckpointError", "load_state_dict", "convert_checkpoint",
           "detect_version", "VERSIONS"]
