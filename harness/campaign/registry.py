"""The campaigns there are, by name: the CLI makes a subcommand of each and the nightly
matrix a cell kind. Named by module so that nothing is imported until a campaign runs
(the campaigns live in the packages above this one)."""

from __future__ import annotations

import importlib

from harness.campaign.runner import Campaign

CAMPAIGNS: dict[str, str] = {
    "explore": "harness.explore.run:ExploreCampaign",
    "fuzz": "harness.hostile.fuzz:FuzzCampaign",
    "stress": "harness.hostile.stress:StressCampaign",
    "layouts": "harness.layouts.run:LayoutsCampaign",
    "races": "harness.races.run:RacesCampaign",
    "savings": "harness.savings.run:SavingsCampaign",
}


def campaign(name: str) -> Campaign:
    module, _, cls = CAMPAIGNS[name].partition(":")
    made: Campaign = getattr(importlib.import_module(module), cls)()
    return made
