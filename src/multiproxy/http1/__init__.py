"""
HTTP/1.x without I/O: the request and response readers (`_parser`), the
writers, `Headers`, target parsing, the hop-by-hop rules, HTTP dates and
structured fields.  Nothing here imports ``twisted.internet``: it takes
bytes and gives events, and is tested without a reactor.  The public names
are exported by `multiproxy.http`, beside the Twisted layer built on them.
"""
