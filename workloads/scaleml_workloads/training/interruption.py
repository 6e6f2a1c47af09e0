"""Whether a worker's failure means it lost its group: a peer went away, or the c10d store or a connection did.

Such a failure is none of the program's: the pod ends with EXIT_INTERRUPTED and the Job's retry
resumes from the newest checkpoint. What torch 2.15 raised in a worker whose peer went away (gloo on
CPU; the peer killed, stopped by SIGTERM, or exiting):

- in a collective (all_reduce, DDP's gradient reduction during backward, barrier,
  all_gather_object, broadcast_object_list), a plain RuntimeError from gloo, not a DistError:
  "[.../gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:9645. This is
  typically caused by a remote worker crashing. ..." or, when the peer went with data in flight,
  "[.../pair.cc:545] Read error [127.0.0.1]:7606: Connection reset by peer. ..."; gloo's write
  error on a closed connection says "Broken pipe";
- in a collective whose peer hangs (a frozen or unreachable node), once the group's timeout is up,
  a plain RuntimeError: "[.../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms for
  recv operation to complete" (or "send");
- from the c10d store, which rank 0's worker hosts: DistNetworkError ("Failed to recv, got 0 bytes.
  Connection was likely closed. Did the remote server shutdown or crash?", "Broken pipe", "The client
  socket has timed out after 5000ms while trying to connect to (127.0.0.1, 33002).") or, when a peer
  never joins the group, DistStoreError ("wait timeout after 5000ms, keys: ..."). NCCL reports its
  failures as DistBackendError (not seen here, without a GPU); all three are DistError.

gloo's messages start with the path of its source file, which depends on how torch was built: they
are matched by their text alone.
"""

from __future__ import annotations

import re
from typing import Final

import torch.distributed as dist

_GLOO_LOST_PEER: Final = re.compile(
    r"Connection closed by peer|Connection reset by peer|Broken pipe"
    r"|Timed out waiting \d+ms for (recv|send) operation to complete"
)


def lost_group(error: BaseException) -> bool:
    """Whether `error` is torch.distributed's report of a lost peer, store or connection."""
    return isinstance(error, dist.DistError) or (
        type(error) is RuntimeError and _GLOO_LOST_PEER.search(str(error)) is not None
    )
