"""Operator commands on the configured backends (local.settings.json or the environment).

    python -m ops list                         dead-lettered messages, poisoned blobs, quarantined datasets
    python -m ops replay dead-letter QUEUE SEQ send a dead letter back to its queue
    python -m ops replay poison ID             make a poisoned blob trigger again
    python -m ops replay event NAME            make the dataset of a dead-lettered Event Grid event trigger again

They run against the local backends or, with MLOPS_STORAGE_BACKEND=azure and
MLOPS_BUS_BACKEND=azure, against the storage account's poison queue, its Event Grid
dead-letter container and Service Bus's dead-letter queues. A failure is one line on stderr and
exit status 1, never a traceback.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    rp = sub.add_parser("replay")
    rp.add_argument("kind", choices=["dead-letter", "poison", "event"])
    rp.add_argument("args", nargs="+", help="QUEUE SEQ for a dead letter, ID for a poisoned blob, NAME for an event")
    args = parser.parse_args(argv)
    if args.command == "replay":
        if args.kind == "dead-letter" and len(args.args) != 2:
            parser.error("replay dead-letter needs QUEUE SEQ")
        if args.kind in ("poison", "event") and len(args.args) != 1:
            parser.error(f"replay {args.kind} needs the ID that `list` shows")

    from devhost.config import load_local_settings

    load_local_settings()
    try:
        return _run(args)
    except Exception as exc:  # an operator gets one line naming the problem, not a traceback
        from shared.core.errors import MlopsError

        first_line = str(exc).splitlines()[0] if str(exc) else ""
        message = exc.message if isinstance(exc, MlopsError) else f"{type(exc).__name__}: {first_line}"
        print(f"ops: {message}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from functions.root import context
    from shared.ops import EVENT_DEAD_LETTERS, POISON_QUEUE, list_entries, replay

    ctx = context()
    if args.command == "list":
        from shared.registry.quarantine import records

        entries = list_entries(ctx)
        refused = [r for r in records(ctx.storage) if not r.get("superseded_by")]
        if not entries and not refused:
            print("nothing dead-lettered, poisoned or quarantined")
        for e in entries:
            print(f"{e.kind:<12} {e.queue:<28} id={e.id:<36} {e.reason}")
        for r in refused:  # a dataset stays where it was dropped; the record says why it was refused
            print(f"{'quarantine':<12} {r['dataset']:<60} {r.get('code')}: {r.get('reason', '')[:300]}")
        return 0
    if args.kind == "dead-letter":
        queue, ident = args.args
    else:
        queue, ident = (POISON_QUEUE if args.kind == "poison" else EVENT_DEAD_LETTERS), args.args[0]
    print(replay(ctx, args.kind, queue, ident))
    return 0


if __name__ == "__main__":
    sys.exit(main())
