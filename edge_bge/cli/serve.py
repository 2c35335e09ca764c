"""``edge-bge serve``: the HTTP server (needs the server extra), every flag also from EDGE_BGE_<FLAG>."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from ..batching import default_budget
from ..errors import EdgeBGEError, InputError
from .common import UsageError, model_kwargs, model_options

__all__ = ["register", "serve", "api_key", "flags_from_env"]


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser(
        "serve",
        parents=[common],
        help="HTTP server: OpenAI, TEI, Cohere/Jina and Ollama routes",
        epilog="Each flag can also be set by the environment variable shown beside it, [$EDGE_BGE_...] (booleans: "
        "1/0, true/false, yes/no; lists: comma-separated). A flag given on the command line wins.",
    )
    s.add_argument("bundles", nargs="+", metavar="BUNDLE")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    key = s.add_mutually_exclusive_group()
    key.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (visible in ps: prefer the file)")
    key.add_argument("--api-key-file", metavar="FILE", help="read the API key from FILE")
    s.add_argument("--cors-origin", action="append", metavar="ORIGIN", help="allow browsers from ORIGIN (repeat)")
    s.add_argument("--batch-wait-ms", type=float, default=2.0, help="wait for more requests before a run (2)")
    s.add_argument("--max-queue", type=int, default=4096, help="texts queued per model before 429 (4096)")
    s.add_argument("--max-items", type=int, default=2048, help="texts per request (2048)")
    s.add_argument("--max-chars", type=int, default=1_000_000, help="characters per request (1000000)")
    s.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024, help="request body bytes (8 MiB)")
    s.add_argument("--request-timeout", type=float, default=60.0, help="seconds until 504 (60)")
    s.add_argument("--drain-timeout", type=float, default=30.0, help="seconds SIGTERM waits for in-flight work")
    s.add_argument("--truncate", action=argparse.BooleanOptionalAction, default=True, help="cut over-long texts")
    s.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True, help="largest batch at start")
    s.add_argument("--max-tokenize", type=int, default=4, help="/tokenize requests worked on at once; then 429 (4)")
    s.add_argument(
        "--max-connections",
        type=int,
        default=1024,
        help="open connections; past it the oldest one waiting for a request is closed, or 503 (1024)",
    )
    s.add_argument("--header-timeout", type=float, default=10.0, help="seconds to send request headers (10)")
    s.add_argument("--keep-alive-timeout", type=float, default=5.0, help="idle seconds between requests (5)")
    s.add_argument(
        "--lenient-content-type",
        action="store_true",
        help="accept a POST without Content-Type as JSON (it lets browsers skip the CORS preflight)",
    )
    s.add_argument(
        "--served-model-name",
        action="append",
        metavar="NAME",
        help="serve a bundle under NAME (repeat: one per bundle, in bundle order; default: the manifest's name)",
    )
    s.add_argument(
        "--strict-model-names",
        action="store_true",
        help="404 for a 'model' not served here, even when one bundle could answer (default: that bundle answers)",
    )
    s.add_argument(
        "--spin",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="ONNX Runtime threads spin-wait for work: ~5%% faster on cores of its own, more CPU per request, "
        "slower on a shared host (off; see benchmarks/spinning.py)",
    )
    s.add_argument(
        "--json-logs",
        action="store_true",
        help="one JSON object per log line: access lines (request id, route, status, texts, tokens, ms) and events",
    )
    s.add_argument("--log-texts", action="store_true", help="put request texts in the JSON access lines (off)")
    model_options(s)
    _env_flags(s)
    s.set_defaults(func=serve)


# Every `serve` flag can also be set by EDGE_BGE_<FLAG> (--max-queue: EDGE_BGE_MAX_QUEUE), the way
# containers are configured. A flag given on the command line wins; an empty variable is unset.
_ENV_PREFIX = "EDGE_BGE_"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _env_flags(parser: argparse.ArgumentParser) -> None:
    """Give each long flag of ``parser`` its variable EDGE_BGE_<FLAG>, shown beside it in --help.

    The flags' defaults move into a table that ``_flags_from_env`` reads after parsing: a flag not
    given is absent from the parsed arguments until then, which is how a flag given wins."""
    table = []
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        flags = [o for o in longs if not (o.startswith("--no-") and "--" + o[5:] in longs)]  # not --no-truncate
        if not flags or action.dest in ("help", "debug"):
            continue
        var = _ENV_PREFIX + flags[0][2:].upper().replace("-", "_")
        action.help = f"{(action.help or '').replace('%(default)s', str(action.default))} [${var}]".lstrip()
        for flag in flags:  # an older spelling's variable (EDGE_BGE_BATCH_TOKENS) is read after the new one's
            table.append((_ENV_PREFIX + flag[2:].upper().replace("-", "_"), flag, action, action.default))
        action.default = argparse.SUPPRESS
    parser.set_defaults(env_flags=table)


def _env_value(var: str, flag: str, action: argparse.Action, raw: str) -> Any:
    value = raw.strip()
    if action.nargs == 0:  # a switch: --json-logs, --truncate/--no-truncate
        if value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        expected = "1/0, true/false or yes/no"
    else:
        convert = action.type if callable(action.type) else str
        many = isinstance(action, argparse._AppendAction)
        items = [v.strip() for v in value.split(",") if v.strip()] if many else [value]
        try:
            out = [convert(v) for v in items]
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            out = None
        if out is not None and (not action.choices or all(v in action.choices for v in out)):
            return out if many else out[0]
        expected = {int: "an integer", float: "a number"}.get(convert, "a value")  # type: ignore[call-overload]
        if action.choices:
            expected = "one of " + ", ".join(map(str, action.choices))
        if many:
            expected = f"a comma-separated list of {expected}s"
    raise UsageError(f"{var}={raw!r} is not valid: expected {expected}, as for {flag}")


def flags_from_env(args: argparse.Namespace, environ: Any = None) -> dict[str, str]:
    """Set each flag not given: from its EDGE_BGE_ variable when that is set, else the flag's default.

    Returns {dest: variable} for the values that came from the environment (once done, the same again).
    A variable whose value the flag would refuse is a UsageError naming the variable and the value."""
    done: dict[str, str] | None = getattr(args, "from_env", None)
    if done is not None:
        return done
    environ = os.environ if environ is None else environ
    from_env: dict[str, str] = {}
    given = {dest for dest in vars(args) if dest != "env_flags"}  # on the command line
    defaults = {}
    for var, flag, action, default in getattr(args, "env_flags", ()):
        if action.dest in given or action.dest in from_env:
            continue
        raw = environ.get(var, "")
        if not raw.strip():
            defaults[action.dest] = default
            continue
        setattr(args, action.dest, _env_value(var, flag, action, raw))
        from_env[action.dest] = var
    for dest, default in defaults.items():
        if dest not in from_env:
            setattr(args, dest, default)
    args.from_env = from_env
    return from_env


def api_key(args: argparse.Namespace) -> str | None:
    """--api-key-file, --api-key, then EDGE_BGE_API_KEY_FILE, EDGE_BGE_API_KEY; None: no key."""
    from_env = flags_from_env(args)
    path, given = args.api_key_file, args.api_key
    if given is not None and "api_key" not in from_env and "api_key_file" in from_env:
        path = None  # the --api-key flag wins over the file's variable
    if path:
        name = from_env.get("api_key_file", "--api-key-file")
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
        except UnicodeDecodeError:
            raise UsageError(f"{name} {path} is not UTF-8 text") from None
        if not key:
            raise UsageError(f"{name} {path} is empty")
        return key
    if given is not None:
        if not given.strip():
            raise UsageError(f"{from_env.get('api_key', '--api-key')} is empty")
        return str(given).strip()
    return None


def serve(args: argparse.Namespace) -> int:
    flags_from_env(args)
    try:
        from ..server import Served, ServerConfig, load_model
        from ..server import serve as run_server
        from ..server.logs import use_json_logs
    except ImportError as e:
        raise EdgeBGEError(
            f"serve needs the server extra ({e.name} is missing): pip install 'edge-bge[server]'"
        ) from None
    from ..providers import wants_gpu

    names = args.served_model_name or []
    if names and len(names) != len(args.bundles):
        raise UsageError(
            f"give one --served-model-name per bundle, in bundle order ({len(args.bundles)} bundles, {len(names)} names)"
        )
    if len(set(names)) != len(names):
        raise UsageError(f"--served-model-name: each name once, got {', '.join(names)}")
    budget_given = args.max_batch_tokens is not None
    if not budget_given:  # provisional: the models' own, once loaded, decides (a GPU asked for may be absent)
        args.max_batch_tokens = default_budget(gpu=wants_gpu(args.providers))
    try:
        config = ServerConfig(
            host=args.host,
            port=args.port,
            api_key=api_key(args),
            cors_origins=tuple(args.cors_origin or ()),
            max_batch_tokens=args.max_batch_tokens,
            batch_wait_ms=args.batch_wait_ms,
            max_queue_items=args.max_queue,
            max_items=args.max_items,
            max_chars=args.max_chars,
            max_body_bytes=args.max_body_bytes,
            request_timeout=args.request_timeout,
            drain_timeout=args.drain_timeout,
            truncate=args.truncate,
            warmup=args.warmup,
            lenient_content_type=args.lenient_content_type,
            max_tokenize_requests=args.max_tokenize,
            max_connections=args.max_connections,
            header_timeout=args.header_timeout,
            keep_alive_timeout=args.keep_alive_timeout,
            strict_model_names=args.strict_model_names,
            json_logs=args.json_logs,
            log_texts=args.log_texts,
        )
    except InputError as e:
        raise UsageError(str(e)) from None
    if config.json_logs:  # from here on: what the bundles' loading logs is JSON too
        use_json_logs(debug=args.debug)
    options = {**model_kwargs(args), "spin": args.spin}
    if not budget_given:
        options["max_batch_tokens"] = None  # each model picks its budget from the provider it got
    served = [
        Served(load_model(bundle, **options), name=names[i] if names else None) for i, bundle in enumerate(args.bundles)
    ]
    if not budget_given:  # the batcher's budget: the largest the loaded models run with
        config = dataclasses.replace(config, max_batch_tokens=max(s.model.max_batch_tokens for s in served))
    run_server(served, config, log_level="info" if args.debug else "warning")
    return 0
