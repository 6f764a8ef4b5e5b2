"""Operator commands on the configured backends (local.settings.json or the environment).

    python -m ops list                         dead-lettered messages, poisoned blobs, quarantined datasets
    python -m ops replay dead-letter QUEUE SEQ send a dead letter back to its queue
    python -m ops replay poison SEQ            make a poisoned blob trigger again
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    rp = sub.add_parser("replay")
    rp.add_argument("kind", choices=["dead-letter", "poison"])
    rp.add_argument("args", nargs="+", help="QUEUE SEQ for a dead letter, SEQ for a poisoned blob")
    args = parser.parse_args(argv)

    from devhost.config import load_local_settings
    from functions.root import context
    from shared.ops import POISON_QUEUE, list_entries, replay

    load_local_settings()
    ctx = context()
    if args.command == "list":
        from shared.quarantine import records

        entries = list_entries(ctx)
        refused = [r for r in records(ctx.storage) if not r.get("superseded_by")]
        if not entries and not refused:
            print("nothing dead-lettered, poisoned or quarantined")
        for e in entries:
            print(f"{e.kind:<12} {e.queue:<28} seq={e.sequence:<6} id={e.message_id[:32]:<32} {e.reason}")
        for r in refused:  # a dataset stays where it was dropped; the record says why it was refused
            print(f"{'quarantine':<12} {r['dataset']:<60} {r.get('code')}: {r.get('reason', '')[:300]}")
        return 0
    if args.kind == "dead-letter":
        if len(args.args) != 2:
            parser.error("replay dead-letter needs QUEUE SEQ")
        queue, seq = args.args
    else:
        queue, seq = POISON_QUEUE, args.args[-1]
    print(replay(ctx, args.kind, queue, int(seq)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
