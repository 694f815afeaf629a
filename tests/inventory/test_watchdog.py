from datetime import timedelta

import pytest
from django.utils import timezone

from inventory import watchdog
from inventory.choices import NodeStatus
from tests.factories import NodeFactory


@pytest.mark.django_db(transaction=True)
def test_the_web_watchdog_marks_a_node_offline_when_its_agent_is_gone(settings):
    settings.GPUFLEET_HEARTBEAT_TIMEOUT = 15
    node = NodeFactory(last_heartbeat=timezone.now() - timedelta(seconds=16))
    watchdog.check_once()
    node.refresh_from_db()
    assert node.status == NodeStatus.OFFLINE
