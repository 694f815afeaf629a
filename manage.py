#!/usr/bin/env python
import os
import signal
import sys
from types import FrameType

# Commands that run until stopped and install their own SIGTERM handler once running.
LONG_RUNNING = {"agent"}


def _stop_while_starting(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if sys.argv[1:2] and sys.argv[1] in LONG_RUNNING:
        # Ctrl-C in `make run` right after start reaches the agent while Django is still
        # importing: stop cleanly (rc 0) instead of dying on the default SIGTERM action.
        signal.signal(signal.SIGTERM, _stop_while_starting)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
