"""Air-gapped kits (``edge-bge pack``) and bundle checks (``edge-bge verify``).

A kit is one folder that installs the runtime and its bundles on a machine with no network::

    KIT/install.sh       checks SHA256SUMS (and that no file was added), installs edge-bge from
                         wheelhouse/ with pip --no-index, then runs `edge-bge verify` on each bundle
    KIT/SHA256SUMS       the sha256 of every other file, in `sha256sum --check` format
    KIT/wheelhouse/      the edge-bge wheel and every wheel it needs for the target Python and platform
    KIT/bundles/NAME/    each bundle: its manifest and the files the manifest lists, nothing else

Runtime side: pip runs as a subprocess of this interpreter (``python -m pip download``, which uses
the network and the pip configuration of the packing machine); nothing here imports torch,
transformers or onnx.
"""

from __future__ import annotations

import base64
import email.message
import email.parser
import hashlib
import importlib.util
import os
import platform as _platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from .errors import EdgeBGEError, InputError
from .kinds import spec
from .manifest import MANIFEST_NAME, Manifest, sha256_file

__all__ = ["Target", "pack", "platform_tags", "runtime_wheel", "verify_bundle"]

DIST = "edge-bge"
SUMS = "SHA256SUMS"
INSTALL = "install.sh"

# The legacy manylinux names and the glibc each stands for (PEP 600). pip expands these to the older
# ones by itself but not "manylinux_2_28_x86_64" to manylinux_2_27 and below, so platform_tags does.
_LEGACY = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
_PEP600 = re.compile(r"manylinux_(\d+)_(\d+)_([a-z0-9_]+)")
_NETWORK = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Could not fetch URL|ConnectTimeout|"
    r"Temporary failure in name resolution|Name or service not known|Network is unreachable"
)


# ---- verify ------------------------------------------------------------------------------------
def verify_bundle(path: str | os.PathLike[str]) -> str:
    """Check a bundle as the runtime loads it: the manifest, each file's sha256, the graph against the
    manifest (on the CPU provider), and one run. Returns a one-line summary; raises EdgeBGEError."""
    from .model import load

    manifest = Manifest.load(path)
    model = load(path, providers="cpu", verify=True)
    if "score" in spec(manifest.kind).ops:
        result = np.asarray(model.score([("edge-bge verify", "a short passage")]))
    else:
        result = model.embed(["edge-bge verify"])
    if not np.all(np.isfinite(result)):
        raise EdgeBGEError(f"{path}: the graph loads but returns non-finite values")
    m = manifest
    return (
        f"{path}: ok  {m.name} ({m.kind.value}, {m.precision.value}, {m.target.value}); "
        f"{len(m.files)} files match their sha256, the graph matches the manifest and runs"
    )


# ---- the target --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """What a kit is for. ``python`` "3.N" and ``platform`` (a wheel platform tag) None: this machine's."""

    python: str | None = None
    platform: str | None = None
    extras: tuple[str, ...] = ()

    @classmethod
    def parse(cls, *, python: str | None = None, platform: str | None = None, extras: str | None = None) -> Target:
        """From the command line's --python, --platform and --extras (comma-separated); InputError if malformed."""
        if python is not None and not re.fullmatch(r"3\.\d{1,2}", python):
            raise InputError(f"--python {python}: expected a Python version such as 3.11")
        if platform is not None:
            platform_tags(platform)  # checks it
        names = tuple(dict.fromkeys(e.strip() for e in (extras or "").split(",") if e.strip()))
        for name in names:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
                raise InputError(f"--extras: {name!r} is not an extra's name")
        return cls(python=python, platform=platform, extras=names)

    @property
    def python_version(self) -> str:
        return self.python or f"{sys.version_info[0]}.{sys.version_info[1]}"

    def describe(self) -> str:
        platform = self.platform or f"the packing machine's platform ({_this_platform()})"
        return f"Python {self.python_version} on {platform}"

    def pip_options(self) -> list[str]:
        options = ["--only-binary=:all:"]
        if self.python:
            options += ["--python-version", self.python]
        for tag in platform_tags(self.platform) if self.platform else []:
            options += ["--platform", tag]
        return options


def _this_platform() -> str:
    libc, version = _platform.libc_ver()
    machine = _platform.machine()
    return f"{libc} {version}, {machine}" if libc else machine


def platform_tags(platform: str) -> list[str]:
    """The ``pip --platform`` values a target of this wheel platform tag accepts: for manylinux, the tag
    and every older glibc's (manylinux_2_28_x86_64 takes manylinux_2_27 ... manylinux_2_5 and the
    legacy names); any other tag (musllinux_*, macosx_*, win_*) as given."""
    if not re.fullmatch(r"[a-z0-9_.]+", platform):
        raise InputError(f"--platform {platform}: expected a wheel platform tag such as manylinux_2_28_x86_64")
    match = _PEP600.fullmatch(platform)
    prefix, _, arch = platform.partition("_")
    if match:
        glibc, arch = (int(match.group(1)), int(match.group(2))), match.group(3)
    elif prefix in _LEGACY and arch:
        glibc = _LEGACY[prefix]
    else:
        return [platform]
    if glibc[0] != 2:
        return [platform]
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc[1], 4, -1)]
    tags += [f"{name}_{arch}" for name, floor in _LEGACY.items() if glibc >= floor]
    return tags


# ---- the runtime's own wheel ---------------------------------------------------------------------
def runtime_wheel(dest: str | os.PathLike[str]) -> Path:
    """Write the wheel of the running edge-bge into ``dest``: built from its source checkout when it runs
    from one (an editable install), else re-packed from its installed files, each checked against the
    installation's RECORD first."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    package = Path(__file__).resolve().parent
    if _project_name(package.parent / "pyproject.toml") == DIST:
        return _build_wheel(package.parent, dest)
    for dist in metadata.distributions(name=DIST):
        if Path(str(dist.locate_file("edge_bge/__init__.py"))).resolve() == package / "__init__.py":
            return _repack(dist, dest)
    raise EdgeBGEError(f"{package} is neither {DIST}'s source checkout nor an installed {DIST}: reinstall it")


def _project_name(pyproject: Path) -> str | None:
    import tomllib

    if not pyproject.is_file():
        return None
    return tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {}).get("name")


def _pip(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def _pip_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:")]
    return (errors or lines or [f"exit status {proc.returncode}"])[-1].strip()


def _build_wheel(root: Path, dest: Path) -> Path:
    """Build from a copy of what the build reads (pyproject.toml, the readme, licences, edge_bge/), so
    that the checkout gets no build/ or egg-info litter."""
    import tomllib

    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    with tempfile.TemporaryDirectory(prefix="edge-bge-wheel-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(root / "edge_bge", src / "edge_bge", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        readme = project.get("readme")
        names = ["pyproject.toml", *([readme] if isinstance(readme, str) else [])]
        names += [p.name for p in root.iterdir() if re.match(r"(LICEN[CS]E|COPYING|NOTICE|AUTHORS)", p.name)]
        for name in names:
            shutil.copy2(root / name, src / name)
        # the build backend of this environment when it has one (fast, offline); else pip fetches it
        isolated = importlib.util.find_spec("setuptools") is None
        out = Path(tmp) / "out"
        proc = _pip(
            ["wheel", "--no-deps", "-q", *([] if isolated else ["--no-build-isolation"]), "-w", str(out), str(src)]
        )
        wheels = sorted(out.glob("*.whl"))
        if proc.returncode or len(wheels) != 1:
            raise EdgeBGEError(f"building the {DIST} wheel from {root} failed: {_pip_error(proc)}")
        return Path(shutil.copy2(wheels[0], dest / wheels[0].name))


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _repack(dist: metadata.Distribution, dest: Path) -> Path:
    info = email.parser.Parser().parsestr(dist.read_text("WHEEL") or "")
    tags = info.get_all("Tag") or []
    if not tags or dist.files is None:
        raise EdgeBGEError(f"the installed {DIST} has no WHEEL tags or RECORD: reinstall it from its wheel")
    name = f"{re.sub(r'[-_.]+', '_', dist.metadata['Name'])}-{dist.version}-{tags[0]}.whl"
    skip = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    record = []
    path = dest / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
        for f in dist.files:
            if f.parts[0] == ".." or "__pycache__" in f.parts or f.suffix == ".pyc":
                continue  # console scripts (made again from entry_points.txt) and bytecode
            if f.parts[0].endswith(".dist-info") and f.name in skip:
                continue
            data = Path(str(dist.locate_file(f))).read_bytes()
            digest = _record_hash(data)
            if f.hash is None or f"{f.hash.mode}={f.hash.value}" != digest:
                raise EdgeBGEError(f"the installed file {f} differs from {DIST}'s RECORD: reinstall {DIST}")
            whl.writestr(f.as_posix(), data)
            record.append(f"{f.as_posix()},{digest},{len(data)}")
        dist_info = next(f.parts[0] for f in dist.files if f.parts[0].endswith(".dist-info"))
        record.append(f"{dist_info}/RECORD,,")
        whl.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return path


def _wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        return email.parser.Parser().parsestr(whl.read(name).decode("utf-8"))


# ---- pack --------------------------------------------------------------------------------------
def pack(
    bundles: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str],
    target: Target | None = None,
    report: Callable[[str], None] = lambda line: None,
) -> Path:
    """Write the kit folder ``out`` (which must not exist) for ``target``: each bundle is verified
    first; the wheels come from ``python -m pip download`` (the network). Returns ``out``.
    InputError for wrong arguments, EdgeBGEError when a bundle, the build or pip fails."""
    target = target or Target()
    out = Path(out)
    if out.exists():
        raise InputError(f"--out {out} already exists; give a new folder")
    if not bundles:
        raise InputError("give at least one bundle")
    names: dict[str, Path] = {}
    for bundle in map(Path, bundles):
        name = bundle.resolve().name
        if name in names:
            raise InputError(f"two bundles are named {name!r} ({names[name]}, {bundle}): rename one folder")
        names[name] = bundle
    for bundle in names.values():
        report(f"checking {bundle}")
        try:
            verify_bundle(bundle)
        except EdgeBGEError as e:
            raise type(e)(f"{bundle}: {e}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}-", dir=out.parent) as tmp:
        stage = Path(tmp) / "kit"
        wheelhouse = stage / "wheelhouse"
        report(f"building the {DIST} wheel")
        wheel = runtime_wheel(wheelhouse)
        meta = _wheel_metadata(wheel)
        known = meta.get_all("Provides-Extra") or []
        unknown = [e for e in target.extras if e not in known]
        if unknown:
            raise InputError(f"--extras {','.join(unknown)}: {DIST} has the extras {', '.join(known)}")
        requirement = f"{wheel}[{','.join(target.extras)}]" if target.extras else str(wheel)
        report(f"downloading the wheels for {target.describe()}")
        proc = _pip(["download", "-q", *target.pip_options(), "-d", str(wheelhouse), requirement])
        if proc.returncode:
            raise EdgeBGEError(_download_failure(proc, target))
        for name, bundle in names.items():
            _copy_bundle(bundle, stage / "bundles" / name)
        spec = (
            f"{DIST}[{','.join(target.extras)}]=={meta['Version']}" if target.extras else f"{DIST}=={meta['Version']}"
        )
        script = _INSTALL_SH
        for key, value in {
            "@TARGET@": target.describe() + (f", extras: {','.join(target.extras)}" if target.extras else ""),
            "@VERSION@": meta["Version"],
            "@PYTHON@": target.python_version,
            "@REQUIREMENT@": spec,
        }.items():
            script = script.replace(key, value)
        (stage / INSTALL).write_text(script, encoding="utf-8")
        (stage / INSTALL).chmod(0o755)
        (stage / SUMS).write_text(_sha256sums(stage), encoding="utf-8")
        stage.rename(out)
    return out


def _download_failure(proc: subprocess.CompletedProcess[str], target: Target) -> str:
    """pip download's failure as one line naming the package that has no wheel for the target."""
    text = proc.stderr + proc.stdout
    if _NETWORK.search(text):
        return f"pip could not reach the package index ({_pip_error(proc)}); pack downloads wheels: it needs the network or a pip mirror"
    missing = re.search(r"No matching distribution found for (\S+)", text)
    if missing:
        req = missing.group(1)
        seen = re.search(rf"requirement {re.escape(req)}.*?\(from versions: ([^)]*)\)", text)
        versions = [v.strip() for v in seen.group(1).split(",")] if seen else []
        newest = f"; the newest for it is {versions[-1]}" if versions and versions[-1] != "none" else ""
        return f"no wheel of {req} for {target.describe()}{newest}: choose another --python or --platform"
    python = re.search(r"Package '([^']+)' requires a different Python: \S+ not in '([^']+)'", text)
    if python:
        return f"{python.group(1)} requires Python {python.group(2)}; the kit targets {target.describe()}"
    return f"pip download failed: {_pip_error(proc)}"


def _copy_bundle(src: Path, dst: Path) -> None:
    """The manifest and exactly the files it lists (no caches or strays from the source folder)."""
    manifest = Manifest.load(src)
    for name in [MANIFEST_NAME, *manifest.files]:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / name, dst / name)


def _sha256sums(root: Path) -> str:
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if "\n" in rel or "\\" in rel:
            raise EdgeBGEError(f"{rel!r}: a file name with a newline or backslash cannot be listed in {SUMS}")
        lines.append(f"{sha256_file(path)}  {rel}\n")
    return "".join(lines)


_INSTALL_SH = r"""#!/usr/bin/env bash
# edge-bge @VERSION@ air-gapped kit for @TARGET@.
# Installs the runtime from ./wheelhouse with no network, then verifies ./bundles/*.
#   bash install.sh                      # into the python3 on PATH (activate a virtualenv first)
#   PYTHON=/opt/venv/bin/python bash install.sh
set -euo pipefail
KIT=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
case $PY in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # before the cd below
cd "$KIT"
command -v sha256sum >/dev/null || { echo "install.sh: sha256sum (GNU coreutils) is needed" >&2; exit 1; }

# 1. the kit as packed: every file matches SHA256SUMS, and no file was added
if ! sha256sum --check --quiet --strict SHA256SUMS >&2; then
    echo "install.sh: refused: the file(s) named above differ from the kit as packed" >&2
    exit 1
fi
added=$(LC_ALL=C comm -23 <(find . -type f ! -path ./SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort) \
                          <(sed 's/^[0-9a-f]\{64\}  //' SHA256SUMS | LC_ALL=C sort))
if [ -n "$added" ]; then
    echo "install.sh: refused: not part of the kit as packed: $(echo "$added" | paste -sd ' ' -)" >&2
    exit 1
fi

# 2. the Python the wheels were chosen for
have=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$have" != "@PYTHON@" ]; then
    echo "install.sh: this kit is for Python @PYTHON@; $PY is Python $have (set PYTHON=...)" >&2
    exit 1
fi

# 3. install from the wheelhouse only: no index, and no pip configuration or PIP_* variables
PIP_CONFIG_FILE=/dev/null "$PY" -m pip --isolated --disable-pip-version-check install --no-index \
    --only-binary=:all: --find-links "$KIT/wheelhouse" "@REQUIREMENT@"

# 4. the bundles, checked by the runtime just installed
"$PY" -m edge_bge verify "$KIT"/bundles/*
echo "install.sh: edge-bge @VERSION@ installed for $PY; bundles in $KIT/bundles"
"""
