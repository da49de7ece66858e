"""Names that the gateway, the worker and the local stack must agree on."""

from temporalio.common import SearchAttributeKey

WORKFLOW_TYPE = "ChatSession"
QUOTA_WORKFLOW_TYPE = "UserQuota"  # one per user, id `quota:<user>`: counters behind the quotas

# Custom search attributes, registered by the local stack (devstack) and by docker-compose.
OWNER_ATTRIBUTE = SearchAttributeKey.for_keyword("ChatOwner")
STATUS_ATTRIBUTE = SearchAttributeKey.for_keyword("ChatStatus")
SEARCH_ATTRIBUTES = {OWNER_ATTRIBUTE.name: "Keyword", STATUS_ATTRIBUTE.name: "Keyword"}
