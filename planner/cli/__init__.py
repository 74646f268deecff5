"""`vllm-planner`: the command line, a thin layer over the Python API (planner/api.py).

One module per subcommand (or family of them), registered by one line in `parser.COMMANDS`;
`options` holds the options several subcommands share, `args` the number types, `fmt` the tables.
Exit status: 0 success (for `plan`: it fits), 1 a plan that does not fit, 2 bad input.
Bad input is one line on stderr, never a traceback.
"""

from planner.cli.entry import main, run
from planner.cli.parser import build_parser
from planner.cli.plan import build_request

__all__ = ["build_parser", "build_request", "main", "run"]
