"""docs/grafana-dashboard.json: valid JSON whose queries name only metrics a relay exports
(chatmail-metrics' counters, the Dovecot metrics render.nix defines)."""

from __future__ import annotations

import json
import re

from chatmaild.metrics import COUNTERS
from nix_tools import REPO, render


def test_dashboard_queries_only_exported_metrics(tmp_path):
    dashboard = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    dovecot = render({"domain": "chat.example.org", "metrics": {"enable": True}}, tmp_path)["dovecot"]
    dovecot_metrics = {f"dovecot_{key.split()[1]}_total" for key in dovecot if key.startswith("metric ")}
    exported = {c.name for c in COUNTERS} | dovecot_metrics
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queried |= set(re.findall(r"\b(?:rate|increase)\((\w+)\{", target["expr"]))
    assert queried and queried <= exported, queried - exported
    # every counter of upstream's set is on the dashboard
    assert {c.name for c in COUNTERS} - queried <= {"filtered_outgoing_mail_count", "filtered_incoming_mail_count",
                                                    "created_ci_accounts", "created_nonci_accounts", "postfix_noqueue"}
