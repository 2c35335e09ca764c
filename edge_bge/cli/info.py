"""``edge-bge info`` (a bundle's manifest, parity and providers), ``build-engine`` (a TensorRT engine
ahead of time), ``pack`` (an air-gapped kit) and ``verify`` (bundles re-checked)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import EdgeBGEError, InputError
from .common import UsageError, model_kwargs, model_options


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    i = sub.add_parser("info", parents=[common], help="a bundle's manifest, parity, and providers")
    i.add_argument("bundle")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--no-load", action="store_true", help="do not open a session (no 'chosen' providers)")
    i.add_argument(
        "--providers-check",
        action="store_true",
        help="run one warm-up batch and report where its nodes ran (share of nodes and time per provider); "
        "exit 1 when a GPU session runs compute nodes on the CPU",
    )
    model_options(i)
    i.set_defaults(func=info)

    g = sub.add_parser("build-engine", parents=[common], help="pre-build a TensorRT engine (EP-context model)")
    g.add_argument("bundle", help="a bundle exported with --target tensorrt")
    g.add_argument("--max-batch-tokens", type=int, help="the Embedder's token budget the engine must serve")
    g.add_argument("--fp16", action="store_true", help="let TensorRT run fp32 layers in fp16")
    g.add_argument("--device-id", type=int, default=0)
    g.add_argument("--cache-dir", help="engine cache (default $EDGE_BGE_CACHE_DIR or ~/.cache/edge-bge)")
    g.add_argument("--force", action="store_true", help="rebuild an engine that exists")
    g.set_defaults(func=build_engine)

    k = sub.add_parser("pack", parents=[common], help="an air-gapped kit: runtime wheels, bundles, install.sh")
    k.add_argument("bundles", nargs="+", metavar="BUNDLE")
    k.add_argument("--out", required=True, metavar="KIT", help="the kit folder to write (must not exist)")
    k.add_argument("--python", metavar="3.N", help="the target's Python (default: this one's)")
    k.add_argument("--platform", help="the target's wheel platform, e.g. manylinux_2_28_x86_64 (default: this machine)")
    k.add_argument("--extras", metavar="E[,E]", help="runtime extras to include, e.g. server or server,gpu")
    k.set_defaults(func=pack)

    v = sub.add_parser("verify", parents=[common], help="re-check bundles: manifest, sha256 of each file, graph")
    v.add_argument("bundles", nargs="+", metavar="BUNDLE")
    v.set_defaults(func=verify)


def info(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from ..manifest import Manifest
    from ..model import load

    manifest = Manifest.load(args.bundle)
    providers: dict[str, Any] = {"available": ort.get_available_providers(), "asked": args.providers}
    if args.providers_check:
        return providers_check(args, manifest, providers)
    if not args.no_load:
        model = load(args.bundle, **model_kwargs(args))
        providers["requested"] = list(getattr(model.providers, "requested", []))
        providers["chosen"] = list(model.providers)
    if args.json:
        print(
            json.dumps({"bundle": str(args.bundle), "manifest": manifest.to_dict(), "providers": providers}, indent=2)
        )
        return 0
    m = manifest
    summary = m.parity.get("summary") or {}
    parity = f"against {m.parity.get('reference', '?')}: " + ", ".join(
        f"{k} {v:.7f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()
    )
    rows = [
        ("bundle", str(args.bundle)),
        ("name", f"{m.name} ({m.kind.value}, {m.architecture})"),
        ("graph", f"{m.precision.value}, {m.target.value}"),
        ("shape", f"dim {m.dim}, max_length {m.max_length}, pooling {m.pooling.value if m.pooling else '-'}"),
        ("normalize", str(m.normalize).lower()),
        ("query", json.dumps(m.query_instruction, ensure_ascii=False)),
        ("parity", f"{parity}; gate {m.parity.get('gate', {})}" if m.parity else "not recorded"),
        (
            "source",
            f"{m.source.get('id', '?')} @ {m.source.get('commit') or m.source.get('revision') or 'default branch'}",
        ),
        ("providers", "available: " + ", ".join(providers["available"])),
    ]
    if "chosen" in providers:
        rows.append(("", f"requested ({args.providers}): " + ", ".join(providers["requested"])))
        rows.append(("", "chosen: " + ", ".join(providers["chosen"])))
    for key, value in rows:
        print(f"{key:<10} {value}")
    return 0


def providers_check(args: argparse.Namespace, manifest: Any, providers: dict[str, Any]) -> int:
    """``info --providers-check``: the session as the model opens it, profiled on one warm-up batch."""
    from .. import providers as P
    from ..batching import DEFAULT_MAX_BATCH_TOKENS, GPU_MAX_BATCH_TOKENS
    from ..bundle import Bundle

    gpu = P.wants_gpu(args.providers)
    budget = args.max_batch_tokens or (GPU_MAX_BATCH_TOKENS if gpu else DEFAULT_MAX_BATCH_TOKENS)
    bundle = Bundle(args.bundle, verify=not args.no_verify)
    request = P.SessionRequest(
        bundle.model_path,
        manifest=manifest,
        providers=args.providers,
        threads=args.threads,
        strict=False,  # report what ran where; the exit status says whether it is all on the GPU
        max_batch_tokens=budget,
        placement=True,
    )
    got = request.open().providers
    fell = P.shortfall(got.placement, got, P.GPU_PROVIDERS)
    providers.update(requested=got.requested, chosen=list(got))
    providers["placement"] = got.placement.to_dict() if got.placement else None
    if args.json:
        print(json.dumps({"bundle": str(args.bundle), "providers": providers}, indent=2))
    else:
        print(f"{'providers':<10} requested ({args.providers}): {', '.join(got.requested)}; chosen: {', '.join(got)}")
        print(f"{'placement':<10} {got.placement.describe() if got.placement else 'not measured'}")
        for run in fell:
            print(f"{'':<10} on {run.provider}: {run.name} ({run.op})")
    return 1 if fell else 0


def build_engine(args: argparse.Namespace) -> int:
    from ..providers import build_engine

    built = build_engine(
        args.bundle,
        max_batch_tokens=args.max_batch_tokens,
        fp16=args.fp16,
        device_id=args.device_id,
        cache_dir=args.cache_dir,
        force=args.force,
    )
    state = "reused" if built.reused else f"built in {built.seconds:.1f}s"
    print(f"{built.context_model}  ({state}; key {built.key[:16]})")
    return 0


def pack(args: argparse.Namespace) -> int:
    from .. import kit
    from ..manifest import sha256_file

    try:
        target = kit.Target.parse(python=args.python, platform=args.platform, extras=args.extras)
        out = kit.pack(args.bundles, out=args.out, target=target, report=lambda line: print(line, file=sys.stderr))
    except InputError as e:  # kit's argument faults
        raise UsageError(str(e)) from None
    sums = sha256_file(out / kit.SUMS)
    print(f"{out}: kit for {target.describe()}; install with: bash {out / kit.INSTALL}")
    print(f"{kit.SUMS} sha256 {sums} (compare it on the target machine)")
    return 0


def verify(args: argparse.Namespace) -> int:
    from .. import kit

    failed = 0
    for bundle in args.bundles:
        try:
            print(kit.verify_bundle(bundle), flush=True)
        except (EdgeBGEError, OSError) as e:
            if args.debug:
                raise
            print(f"edge-bge: error: {bundle}: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
