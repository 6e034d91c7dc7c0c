"""agent.report: what the service reports (screen view, status line) says only what is true."""

from __future__ import annotations

from agent import ui
from agent.report import status_line, stopped_view
from agent.service import SIGN_IN_STOPPED


def test_report_fills_in_the_truth():
    assert stopped_view(ui.ExpiredView(), button=False, retry_in=900.0) == ui.ExpiredView(
        button=False, retry_in=900.0)
    assert stopped_view(ui.ProgressView("x"), button=False, retry_in=1.0) == ui.ProgressView("x")
    assert "button" not in status_line(state=SIGN_IN_STOPPED, tokens=None, authorization=None,
                                       device_id="d", button=False)
