"""
The ``multiproxy`` command, for what is not a running proxy (that is
``twistd multiproxy``): ``multiproxy ca --out DIR`` makes the CA that TLS
inspection signs its certificates with.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from multiproxy import __version__
from multiproxy.pipeline._errors import ConfigError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0, or 1 with one line on stderr)."""
    parser = argparse.ArgumentParser(
        prog="multiproxy", description="multiproxy tools (run the proxy with: twistd multiproxy)")
    parser.add_argument("--version", action="version", version=f"multiproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    ca = commands.add_parser(
        "ca", help="create the CA for TLS inspection (forward --inspect-ca DIR)",
        description="Create DIR/ca.pem (give it to the clients to trust) and DIR/ca.key "
                    "(readable by its owner only) for forward --inspect-ca DIR.")
    ca.add_argument("--out", required=True, metavar="DIR", help="directory to write them to")
    ca.add_argument("--name", help="the CA's common name (default: names this host)")
    ca.add_argument("--force", action="store_true", help="replace an existing CA")
    args = parser.parse_args(argv)
    if args.command == "ca":
        from multiproxy.forward._inspect import make_ca

        try:
            cert, key = make_ca(args.out, args.name, force=args.force)
        except ConfigError as e:
            print(f"multiproxy ca: error: {e}", file=sys.stderr)
            return 1
        print(f"wrote {cert} (install it in the clients' trust store) and {key} (keep it secret)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
