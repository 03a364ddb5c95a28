"""Every Redis key the broker writes, named once (docs/design.md, "Redis layout"). One hash tag per
function (``{broker:fn:<name>}``), per mapping (``{broker:esm:<uuid>}``), for the account's pool and
for the deployment (``{broker}``), so every script's keys fall in one Cluster slot."""

from __future__ import annotations

# the deployment
STATE = "{broker}:state"  # the marker whose absence says Redis lost the broker's state
MAPPINGS = "{broker}:mappings"  # API mappings: UUID -> definition and last-modified time
MAPPING_ENABLED = "{broker}:mapping-enabled"  # pauses and resumes of file mappings made through the API
RESERVED_CONCURRENCY = "{broker}:reserved-concurrency"  # reservations set through the concurrency API
STATUS = "{broker}:status"  # each replica's view for the status API: replica -> JSON with its expiry
ACCOUNT_PERMITS = "{broker:account}:permits"  # holders of the account's unreserved pool


def replica(replica_id: str) -> str:
    """A replica's heartbeat."""
    return f"{{broker}}:replica:{replica_id}"


# a function
def _function(name: str) -> str:
    return f"{{broker:fn:{name}}}"


def function_permits(name: str) -> str:
    return f"{_function(name)}:permits"


def async_events(name: str) -> str:
    return f"{_function(name)}:events"


def async_delayed(name: str) -> str:
    return f"{_function(name)}:delayed"


def invoke_config(name: str) -> str:
    return f"{_function(name)}:invoke-config"


def tags(name: str) -> str:
    return f"{_function(name)}:tags"


def function_quarantine(name: str) -> tuple[str, str]:
    """Async events given up: entries by id, and their order (quarantined at)."""
    return f"{_function(name)}:quarantine", f"{_function(name)}:quarantine-order"


def runtime_queue(name: str) -> str:
    """Invocations for a function's shared-port environments, oldest first."""
    return f"{_function(name)}:rt:queue"


def runtime_results(name: str, replica_id: str) -> str:
    """Results for the replica that asked."""
    return f"{_function(name)}:rt:results:{replica_id}"


# a stream mapping
def _mapping(uuid: str) -> str:
    return f"{{broker:esm:{uuid}}}"


def mapping_quarantine(uuid: str) -> tuple[str, str]:
    """Stream records given up: entries by id, and their order (quarantined at)."""
    return f"{_mapping(uuid)}:quarantine", f"{_mapping(uuid)}:quarantine-order"


def parked_keys(uuid: str, shard: str) -> str:
    """A shard's parked keys (IsolateFailingKeys): key -> attempts spent on its oldest record."""
    return f"{_mapping(uuid)}:parked:{shard}"


def parked_records(uuid: str, shard: str, key: str) -> str:
    """One parked key's records, oldest first."""
    return f"{_mapping(uuid)}:parked:{shard}:{key}"


def checkpoints(uuid: str) -> str:
    return f"{_mapping(uuid)}:checkpoints"


def mapping_meta(uuid: str) -> str:
    return f"{_mapping(uuid)}:meta"


def leases(uuid: str) -> list[str]:
    """A mapping's lease hashes: owner, expiry and fencing epoch, by shard."""
    return [f"{_mapping(uuid)}:lease_owner", f"{_mapping(uuid)}:lease_expiry", f"{_mapping(uuid)}:lease_epoch"]


def mapping_replicas(uuid: str) -> str:
    return f"{_mapping(uuid)}:replicas"
