"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug and keeps
its traceback.
"""


class CompressorError(Exception):
    """Bad input or usage: missing files, corrupt checkpoints, malformed profiles, and so on."""


class GateFailure(Exception):
    """Raised only by callers that want an exception instead of a failed report (exit code 1)."""
