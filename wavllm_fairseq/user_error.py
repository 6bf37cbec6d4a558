"""The base of every error the user can act on: bad data, options or checkpoints."""
from hydra.errors import CompactHydraException


class UserError(ValueError, CompactHydraException):
    """Printed as its message alone, without a traceback: by the plugin's excepthook under
    fairseq-train and fairseq-generate, and by Hydra under fairseq-hydra-train (Hydra catches
    every error itself and prints a traceback for all but its compact kind)."""
