"""A live message's table parts lead it, one kind of part per message
(``core.fragments``): how browsers parse them, checked in Chromium by
tests/e2e/test_live_overview_browser.py."""

from __future__ import annotations

from core.fragments import frames, root_tag

ROWS = '<tbody id="node-1-gpus" hx-swap-oob="true"><tr><td><a href="/">a</a></td></tr></tbody>'
MORE_ROWS = '<tbody id="node-2-gpus" hx-swap-oob="true"><tr><td>b</td></tr></tbody>'
ROW = '<tr id="deployment-1" hx-swap-oob="true"><td>c</td></tr>'
HEADER = '<header id="node-1-header" hx-swap-oob="true">h</header>'
SECTION = '<section id="node-1-drain" hx-swap-oob="true">d</section>'


def test_the_root_tag_is_read_past_whitespace_and_in_any_case():
    assert root_tag("\n  <TBODY id=x>") == "tbody"
    assert root_tag("<td>") == "td" and root_tag("plain text") == "" and root_tag("") == ""


def test_rows_after_other_elements_go_first():
    assert frames([HEADER, ROWS, SECTION]) == [ROWS + HEADER + SECTION]


def test_parts_of_one_kind_share_a_message_and_other_kinds_get_their_own():
    assert frames([SECTION, ROWS, ROW, MORE_ROWS]) == [ROWS + MORE_ROWS + SECTION, ROW]


def test_fragments_without_table_parts_stay_one_message_in_order():
    assert frames([HEADER, SECTION]) == [HEADER + SECTION]


def test_nothing_to_send_is_no_message():
    assert frames([]) == [] and frames(["", ""]) == []
