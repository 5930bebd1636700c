"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a single line on stderr and exit code 2 (3 for
:class:`LatencyInconclusive`, which a CI job can retry on); anything else is a bug and keeps its
traceback.
"""


class CompressorError(Exception):
    """Bad input or usage: missing files, corrupt checkpoints, malformed profiles, and so on."""


class LatencyInconclusive(CompressorError):
    """A latency decision would rest on a contended measurement: exit code 3, retry later."""


# The exit codes, in one place (README "Exit codes"). A crash is not 3: a CI job retries on 3.
EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INCONCLUSIVE = 0, 1, 2, 3
EXIT_INTERNAL_ERROR = 4  # a bug: the traceback is printed
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class GateFailure(Exception):
    """Raised only by callers that want an exception instead of a failed report (exit code 1)."""
