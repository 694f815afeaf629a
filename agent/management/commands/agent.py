from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from agent.loop import Agent


class Command(BaseCommand):
    help = "Run this node's agent: GPU telemetry at 1 Hz, heartbeats, liveness checks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--node", default=settings.NODE_NAME, help="node name")
        parser.add_argument("--address", default=settings.GPUFLEET_NODE_ADDRESS)
        parser.add_argument("--once", action="store_true", help="one tick, then exit")

    def handle(self, *args: Any, **options: Any) -> None:
        agent = Agent(options["node"], options["address"])
        if options["once"]:
            agent.tick()
            return
        agent.install_signal_handlers()
        agent.run()
