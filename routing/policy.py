"""Where a request's data may go: compliance rules that filter a route's candidates.

A request says what it carries through its context (OpenAI ``metadata`` or
``X-Switchboard-*`` headers): ``industry: healthcare`` means protected health
information, which only providers with a signed HIPAA Business Associate
Agreement may receive; ``data_region: eu`` means EU personal data that must be
processed in the EU (GDPR). The engine drops every other candidate, and refuses
the request (403 ``no_compliant_provider``) rather than send it anywhere else.

A client key's organisation can say it too: every request of a key whose
organisation's industry is healthcare is healthcare data, whatever (or whether)
its metadata says; a client cannot talk its way out of its organisation's rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from routing.table import DeploymentInfo

HEALTHCARE = "healthcare"


@dataclass(frozen=True)
class Requirements:
    baa: bool = False  # only providers with a signed BAA
    region: str = ""  # only providers processing data in this region; empty: anywhere

    @classmethod
    def of(cls, context: Mapping[str, str], organisation_industry: str = "") -> Requirements:
        """What a request's metadata, and its key's organisation's industry, require."""
        return cls(
            baa=HEALTHCARE in (context.get("industry", "").strip().lower(), organisation_industry),
            region=context.get("data_region", "").strip().lower(),
        )

    @property
    def restricts(self) -> bool:
        return self.baa or bool(self.region)

    def admits(self, deployment: DeploymentInfo) -> bool:
        if self.baa and not deployment.baa_signed:
            return False
        return not self.region or deployment.data_region == self.region

    def describe(self) -> str:
        needs = []
        if self.baa:
            needs.append("is healthcare data (HIPAA: a provider with a signed BAA)")
        if self.region:
            needs.append(f"must stay in the {self.region.upper()} region")
        return " and ".join(needs)
