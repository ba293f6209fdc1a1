"""What to do next after a cloud API error: one table for both clouds, and the one-line form of a message.

Example::

    hint("alibaba", "QuotaExceed.ElasticQuota")      # "an account quota is reached: raise it ..."
    hint("azure", "SkuNotAvailable")                 # "pick another azure.vm_size or azure.location"
    one_line("Operation\\n  failed")                  # "Operation failed"
"""

from __future__ import annotations

RESUME_HINT = "run `ollastack up` again to finish, or `ollastack down` to remove what was created"
AZURE_SIGN_IN = ("set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET (a service principal), "
                 "or run `az login`")
_ALIBABA_RAM = "the RAM user lacks a permission: grant it AliyunECSFullAccess and AliyunVPCFullAccess"
_ALIBABA_SECRET = "the access key secret is wrong: check ALIBABA_CLOUD_ACCESS_KEY_SECRET"
# (cloud, error code or its start, word the message must hold or "", what to do next): Alibaba's
# "Throttling" covers "Throttling.User" and "Throttling.Api".
HINTS = (
    ("azure", "SkuNotAvailable", "", "pick another azure.vm_size or azure.location"),
    ("azure", "QuotaExceeded", "",
     "request more vCPU quota for this size family in azure.location, or pick another azure.vm_size"),
    ("azure", "OperationNotAllowed", "quota", "request more quota in azure.location or pick another azure.vm_size"),
    ("azure", "AuthorizationFailed", "", "give the signed-in identity the Contributor role on the subscription"),
    ("azure", "InvalidAuthenticationToken", "",
     "sign in again (az login) or check AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET"),
    ("azure", "SubscriptionNotFound", "", "check azure.subscription_id / AZURE_SUBSCRIPTION_ID"),
    ("azure", "InvalidParameter", "", "check the azure.* settings named in the message"),
    ("azure", "ImageNotFound", "", "check azure.image (publisher:offer:sku:version) is offered in azure.location"),
    ("alibaba", "InvalidAccessKeyId", "", "check ALIBABA_CLOUD_ACCESS_KEY_ID (the key may be disabled or deleted)"),
    ("alibaba", "SignatureDoesNotMatch", "", _ALIBABA_SECRET),
    ("alibaba", "IncompleteSignature", "", _ALIBABA_SECRET),
    ("alibaba", "InvalidTimeStamp", "", "this machine's clock is off: synchronise it (NTP) and run again"),
    ("alibaba", "Forbidden", "", _ALIBABA_RAM),
    ("alibaba", "NoPermission", "", _ALIBABA_RAM),
    ("alibaba", "InvalidResourceType", "",
     "alibaba.instance_type is not offered there: choose another instance_type or zone"),
    ("alibaba", "OperationDenied.NoStock", "",
     "no stock of alibaba.instance_type in this zone: set another alibaba.zone or type"),
    ("alibaba", "QuotaExceed", "", "an account quota is reached: raise it in the Quota Center or delete unused resources"),
    ("alibaba", "InvalidAccountStatus", "",
     "the account cannot buy resources (balance or verification): check the billing console"),
    ("alibaba", "InvalidRegionId", "", "check alibaba.region"),
    ("alibaba", "Throttling", "", "the API keeps throttling: wait a minute and run again"),
)


def hint(cloud: str, code: str, message: str = "") -> str:
    """What to do next for ``cloud``'s error ``code`` (``message``: the error's text); ``RESUME_HINT`` if unknown."""
    for where, known, word, advice in HINTS:
        if where == cloud and code.startswith(known) and word in message.lower():
            return advice
    return RESUME_HINT


def one_line(text: object, limit: int = 200) -> str:
    """``text`` on one line, whitespace runs collapsed, cut to ``limit`` characters with "..." at the end."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
