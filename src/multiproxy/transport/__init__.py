"""
The transport machinery under every proxy: the byte `Relay` (CONNECT,
WebSocket, TCP relay, SOCKS) and its ``splice(2)`` pump, direct writes, the
cheap-to-move `Deadline`, the accept guard against running out of file
descriptors, and TLS (server contexts with SNI and ALPN, verified client
TLS, the certificate configuration).  Only these modules read Twisted
transports' private attributes.
"""
