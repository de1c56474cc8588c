"""`srbatch`: upscale files, folders and globs through running srserve replicas.

Outputs mirror the input tree under --out; existing outputs are skipped, so a
rerun resumes. The servers' /v1/models is asked first: an unknown model or scale
stops the job before any file is sent. Exit status: 0 all done, 1 some failed,
2 usage error (or nothing to ask: no server, missing key, unknown model/scale).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from srserve.client import catalog
from srserve.client.inputs import FORMAT_SUFFIX, discover, display, plan_outputs
from srserve.client.replicas import Replicas
from srserve.client.runner import Options, Runner, remove_stale_temporaries, report

DEFAULT_URL = "http://127.0.0.1:8000"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and every option's default (options without one say what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="srbatch", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or glob patterns")
    p.add_argument("--out", type=Path, required=True, help="output folder (the input tree is mirrored below it)")
    p.add_argument("--model", required=True, help="model name (GET /v1/models lists them)")
    p.add_argument(
        "--scale",
        type=float,
        help="upscale factor, or give --width and/or --height (default: the server's, 2; 1 for restoration models)",
    )
    p.add_argument("--restore", help="a restoration model (dejpeg, denoise) run before the upscaler, in the same job")
    p.add_argument("--width", type=int, help="output width in px; alone, the height keeps the aspect")
    p.add_argument("--height", type=int, help="output height in px; alone, the width keeps the aspect")
    p.add_argument("--format", choices=sorted(FORMAT_SUFFIX), default="png", help="output format")
    p.add_argument("--quality", type=int, default=None, help="JPEG/WebP quality 1-100 (default: the server's, 90)")
    p.add_argument(
        "--url",
        action="append",
        dest="urls",
        metavar="URL",
        help=f"a server; repeat to spread the load (default: {DEFAULT_URL})",
    )
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    p.add_argument(
        "--priority",
        choices=("low", "normal"),
        default="low",
        help="low lets interactive uploads go first; under overload it is shed first and retried",
    )
    p.add_argument("--api-key", default=None, help="sent as X-API-Key (default: the SRBATCH_API_KEY variable)")
    p.add_argument("--retries", type=int, default=6, help="tries after the first on 429/502/503/504/connection errors")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for one request")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    p.add_argument("--report", type=Path, help="write a JSON report of every file here (default: none)")
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "log"),
        default="auto",
        help="a progress bar on a terminal (auto), or log lines",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.scale is not None and (args.width is not None or args.height is not None):
        parser.error("give either --scale or --width/--height, not both")
    if args.concurrency < 1 or args.retries < 0 or args.timeout <= 0 or (args.scale is not None and args.scale <= 0):
        parser.error("--concurrency and --scale must be positive, --retries at least 0")
    if any(v is not None and v < 1 for v in (args.width, args.height)):
        parser.error("--width and --height must be at least 1")
    api_key = args.api_key or os.environ.get("SRBATCH_API_KEY")
    if args.quality is not None and not 1 <= args.quality <= 100:
        parser.error("--quality must be within 1..100")
    try:
        found = discover(args.inputs)
    except FileNotFoundError as e:
        parser.error(str(e))
    if not found:
        parser.error("the inputs hold no images (.png .jpg .jpeg .webp .bmp .tif .tiff .heic .heif .avif)")
    out_dir: Path = args.out
    if out_dir.exists() and not out_dir.is_dir():
        parser.error(f"--out {display(out_dir)} is not a folder")
    urls = args.urls or [DEFAULT_URL]
    try:  # before any folder is made or file sent
        models = catalog.fetch(urls, api_key=api_key, timeout_s=min(args.timeout, 30.0))
        catalog.check(models, args.model, args.scale)
        if args.restore is not None:
            catalog.check_restore(models, args.restore)
    except catalog.CatalogError as e:
        print(f"srbatch: {e}", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)

    params: dict[str, object] = {"model": args.model, "format": args.format, "priority": args.priority}
    for name in ("scale", "width", "height", "restore"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    if args.quality is not None:
        params["quality"] = args.quality
    progress = sys.stderr.isatty() if args.progress == "auto" else args.progress == "bar"
    options = Options(
        out_dir=out_dir,
        params=params,
        concurrency=args.concurrency,
        retries=args.retries,
        timeout_s=args.timeout,
        overwrite=args.overwrite,
        api_key=api_key,
        progress=progress,
    )
    replicas = Replicas(urls)
    tasks = plan_outputs(found, out_dir, args.format)

    started = time.monotonic()
    results = asyncio.run(Runner(tasks, replicas, options).run())
    summary = report(results, time.monotonic() - started, replicas)
    if args.report:
        args.report.write_text(json.dumps(summary, indent=2) + "\n")
    s = summary["summary"]
    print(
        f"srbatch: {s['ok']} done, {s['skipped']} skipped, {s['failed']} failed in {s['seconds']:.1f} s",
        file=sys.stderr,
    )
    return 1 if s["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
