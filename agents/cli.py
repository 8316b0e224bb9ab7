"""The ``vpt`` command. Subcommands: ``info`` (more arrive with the agents).

Usage::

    vpt info SOURCE [--out DIR] [--max-images N] [--strict]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _info(args: argparse.Namespace) -> int:
    from vpt_env.data.summary import contact_sheet, summarize_source

    summary, samples, classes = summarize_source(args.source, max_images=args.max_images, strict=args.strict)
    print(summary.table())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "info.json").write_text(json.dumps({**summary.to_dict(), "class_names": classes}, indent=2))
    contact_sheet(samples, classes).save(out / "contact_sheet.png")
    print(f"wrote {out / 'info.json'} and {out / 'contact_sheet.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vpt`` console script."""
    parser = argparse.ArgumentParser(prog="vpt", description="vpt-env: visual pre-training as RL.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="describe a source: counts, sizes, annotations, skipped files")
    info.add_argument("source", help="an embedded name (photos, scenes, ...), a folder, or a dataset file")
    info.add_argument("--out", default="info_out", help="folder for info.json and contact_sheet.png")
    info.add_argument("--max-images", type=int, default=None, help="read at most this many images")
    info.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    info.set_defaults(run=_info)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError) as err:
        print(f"vpt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
