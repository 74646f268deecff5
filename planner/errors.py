"""The one exception type users see: a one-line message naming the problem and the fix."""


class PlannerError(Exception):
    """Bad input or an unsupported case. The CLI prints it as one line and exits with status 2."""

    exit_code = 2
