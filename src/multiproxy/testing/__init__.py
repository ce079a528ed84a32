"""
multiproxy.testing: run any multiproxy proxy in memory, on fake time.

For testing your own policies, balancers, reporters, fetchers and protocol
subclasses without sockets, threads or sleeping::

    from multiproxy.forward import ForwardProxy
    from multiproxy.testing import Harness, Reply

    harness = Harness()
    harness.origin("example.com", reply=Reply(200, b"hello"))
    proxy = ForwardProxy(harness.reactor, reporters=[harness.reporter])
    client = harness.connect(proxy)
    response = client.request("GET", "http://example.com/")
    assert response.status == 200 and response.body == b"hello"
    assert harness.records[0].upstream == "example.com:80"

`Harness` ties the pieces together: a `FakeReactor` (a
``twisted.internet.task.Clock`` whose TCP and name resolution stay in
memory), `FakeOrigin` servers answering scripted `Reply` values, and
`FakeClient` connections that read parsed `Response` values.  See
docs/testing.md.
"""

from multiproxy.testing._client import FakeClient, ResponseIncomplete
from multiproxy.testing._harness import Harness, NotQuiet, RecordingReporter
from multiproxy.testing._messages import ReceivedRequest, Response
from multiproxy.testing._origin import FakeOrigin, Reply
from multiproxy.testing._reactor import (
    CONNECT_MODES,
    FakeListeningPort,
    FakeReactor,
    TLSNotSupported,
)

__all__ = [
    "CONNECT_MODES",
    "FakeClient",
    "FakeListeningPort",
    "FakeOrigin",
    "FakeReactor",
    "Harness",
    "NotQuiet",
    "ReceivedRequest",
    "RecordingReporter",
    "Reply",
    "Response",
    "ResponseIncomplete",
    "TLSNotSupported",
]
