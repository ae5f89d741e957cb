"""`python -m exporter.configure MODE FD ARGV…`: the settings read and checked in a process
of their own, for the serving process (see `app`), which never loads pydantic.

MODE `start`: what start-up does before anything runs; the `Plan` is pickled to the
pipe FD, or the exit code says why not (0 after --help, --version or --config.check,
2 after printing a problem). MODE `reload`: --config.file's tenants for this shard,
`("tenants", [PollerSpec…])` or `("problems", [line…])`.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Sequence

from . import cli
from .errors import ConfigError, TenantConfigError


def main(args: Sequence[str]) -> int:
    mode, fd, *argv = args
    with os.fdopen(int(fd), "wb") as out:
        if mode == "start":
            plan = cli.plan(argv)
            if isinstance(plan, int):
                return plan
            pickle.dump(plan, out)
            return 0
        try:
            sent: tuple[str, list[object]] = ("tenants", list(cli.load_shard(cli.settings(argv))))
        except TenantConfigError as exc:
            sent = ("problems", list(exc.problems))
        except ConfigError as exc:
            sent = ("problems", [str(exc)])
        pickle.dump(sent, out)
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
