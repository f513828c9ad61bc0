"""Regenerate the Python stubs in driver/pb from the .proto files there.

    python scripts/gen_protos.py            # writes driver/pb/*_pb2.py and *_pb2_grpc.py in place
    python scripts/gen_protos.py --out DIR  # writes into DIR/driver/pb/ instead (the staleness test uses this)

The repository root is the include path, so generated imports read `from driver.pb import x_pb2`;
grpc_tools' bundled well-known types (duration, timestamp, empty) are on the include path too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = Path("driver") / "pb"


def generate(out: Path) -> list[Path]:
    """Run protoc on every driver/pb/*.proto, writing into out/driver/pb; returns the written files."""
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / PROTO_DIR).glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files in {ROOT / PROTO_DIR}")
    (out / PROTO_DIR).mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = ["grpc_tools.protoc", f"-I{ROOT}", f"-I{well_known}", f"--python_out={out}",
            f"--grpc_python_out={out}", *[str(ROOT / p) for p in protos]]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed (see the messages above)")
    return sorted((out / PROTO_DIR).glob("*_pb2*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: the repository root)")
    args = parser.parse_args(argv)
    for path in generate(args.out.resolve()):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
