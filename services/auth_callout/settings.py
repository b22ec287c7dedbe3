"""Settings of auth_callout: where its NATS login and signing key are, whom it admits, for how long."""

from __future__ import annotations

from typing import Annotated

import msgspec

from libs.kube import KubeconfigSetting
from libs.settings import CommonSettings


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


DEFAULT_SERVICE_ACCOUNTS = (
    "gpudra-system/gpudra-node=node,"
    "gpudra-system/gpudra-controller=health-controller+compute-domain-controller+bootstrap,"
    "gpudra-system/gpudra-operator=operator,"
    "gpudra-system/gpudra-extender=extender"
)


class Settings(CommonSettings, kw_only=True, frozen=True):
    """NATS auth callout: ServiceAccount tokens, checked by TokenReview, become users with their node's roles."""

    issuer_seed_file: Annotated[
        str, _doc("nkey seed of the account that signs user JWTs (its public key is auth_callout.issuer)")
    ] = "/etc/gpudra/auth-callout/issuer.nk"
    target_account: Annotated[str, _doc("NATS account the admitted users join")] = "GPUDRA"
    token_audience: Annotated[
        str, _doc("audience the clients' projected ServiceAccount tokens carry (TokenReview checks it)")
    ] = "gpudra-nats"
    service_accounts: Annotated[
        str,
        _doc(
            "who may hold which roles: namespace/serviceaccount=role+role,... ('node' is every node role); "
            "anyone else is refused"
        ),
    ] = DEFAULT_SERVICE_ACCOUNTS
    user_lifetime_seconds: Annotated[
        int,
        _doc("how long an admitted user JWT lasts (0: as long as the connection; a reconnect asks again)"),
        msgspec.Meta(ge=0),
    ] = 0
    kubeconfig: KubeconfigSetting = ""
