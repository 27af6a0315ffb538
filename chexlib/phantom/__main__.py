"""Command line: ``python -m chexlib.phantom --out DIR --n-train N --n-valid N --seed S``."""

from __future__ import annotations

import argparse
import sys

from chexlib.errors import ChexlibError
from chexlib.phantom.generate import DEFAULT_N_TRAIN, DEFAULT_N_VALID, generate


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, generate the phantom and print a one-line summary."""
    parser = argparse.ArgumentParser(
        prog="python -m chexlib.phantom",
        description="Generate the phantom CheXpert-format data set (images, CSVs, masks).",
    )
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN, help="images in train.csv")
    parser.add_argument("--n-valid", type=int, default=DEFAULT_N_VALID, help="images in valid.csv")
    parser.add_argument("--seed", type=int, default=0, help="random seed (>= 0)")
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: all cores)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the phantom files in a folder that holds something else",
    )
    for name, what in (("drain-rate", "pneumothorax images of train.csv"),
                       ("drain-rate-valid", "pneumothorax images of valid.csv"),
                       ("drain-rate-other", "all other images")):
        parser.add_argument(f"--{name}", type=float, default=0.0,
                            help=f"share of the {what} with a chest drain (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        summary = generate(
            args.out,
            n_train=args.n_train,
            n_valid=args.n_valid,
            seed=args.seed,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=not args.quiet,
            p_drain=args.drain_rate,
            p_drain_valid=args.drain_rate_valid,
            p_drain_other=args.drain_rate_other,
        )
    except ChexlibError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = summary["counts"]
    images = counts["train"]["images"] + counts["valid"]["images"]
    if summary["reused"]:
        print(f"{args.out} already holds this phantom ({images} images): nothing to do")
    else:
        print(
            f"wrote {images} images to {args.out} in {summary['seconds']:.1f} s "
            f"({summary['images_per_second']:.1f} images/s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
