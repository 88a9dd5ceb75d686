"""Which shadow logs a deployment accepts: production only the device's, a laptop also simulated ones."""
from __future__ import annotations

import dagster as dg


class ShadowPolicy(dg.ConfigurableResource):
    """`allow_simulated`: may a shadow run be simulated here (replayed on this machine instead of logged
    by the Jetson)? Chosen per deployment (orchestration/deployments.py): local yes, prod never. Every
    simulated run says "simulated" in its report, the promotion record, the pointer and the UI."""

    allow_simulated: bool = False
