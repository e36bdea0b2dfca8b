"""`restgov merge-lora`: a LoRA checkpoint (adapter over a base checkpoint) as one plain model directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import add_db_argument, check_output_dir, fail

HELP = (
    "Merge a LoRA checkpoint's adapter into its base model and save the result as a plain Hugging Face "
    "directory (for export or serving without peft)."
)


def cmd_merge_lora(a: argparse.Namespace) -> int:
    from ..lora import adapter_base, is_adapter_dir, merge

    ckpt, out = Path(a.checkpoint), Path(a.out)
    if not ckpt.is_dir():
        fail(f"--checkpoint {ckpt}: no such folder")
    if not is_adapter_dir(ckpt):
        fail(f"--checkpoint {ckpt} has no adapter_config.json: not a LoRA checkpoint (nothing to merge)")
    try:
        base = adapter_base(ckpt)
    except FileNotFoundError as e:
        fail(f"--checkpoint {e}")
    check_output_dir(out, "--out")
    merge(ckpt, out)
    print(f"merged {ckpt} (adapter) into its base {base}: {out}")
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `merge-lora` to restgov's subcommands."""
    p = subparsers.add_parser(
        "merge-lora",
        help=HELP,
        description=HELP
        + " Checkpoints of campaigns with [improve.lora] are adapters: runs/<id>/checkpoints/"
        "<policy>/ holds adapter_config.json, whose base_model_name_or_path names the base checkpoint.",
    )
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a LoRA checkpoint directory")
    p.add_argument("--out", required=True, metavar="DIR", help="where the merged model is written (new)")
    add_db_argument(p, None, help="accepted as by every restgov command; merge-lora reads no database")
    p.set_defaults(fn=cmd_merge_lora)
    return p
