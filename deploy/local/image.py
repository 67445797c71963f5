"""The gateway's container image, built here with podman and no container registry.

    python deploy/local/image.py build | size | remove

``build`` installs what is missing (podman, runc, debootstrap), writes a project-local podman
config (.cache/podman/containers.conf, passed as CONTAINERS_CONF: the machine's own files are
left alone), builds a Debian bookworm base with debootstrap once (cached as a tarball and
imported as localhost/debian:bookworm), builds the gateway's wheelhouse on the host (the
build container cannot reach the package index), and runs ``podman build`` on a small context
under .cache/image-context. It is idempotent: with everything cached it only rebuilds the
gateway's own wheel, and podman's layer cache does the rest.

Settings (environment): IMAGE_NAME (default localhost/hitl-gateway), IMAGE_BASE (default: the
debootstrapped localhost/debian:bookworm), IMAGE_DEBIAN_MIRROR (default: the machine's apt
source). See docs/deploy.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from stack import StackError, _apt_install

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"
PODMAN_CONF = CACHE / "podman" / "containers.conf"
CONTEXT = CACHE / "image-context"
WHEELS = CACHE / "wheels"
ROOTFS_TAR = CACHE / "image" / "debian-bookworm-rootfs.tar"
CONTAINERFILE = REPO / "deploy" / "Containerfile"
IMAGE = os.environ.get("IMAGE_NAME", "localhost/hitl-gateway")
DEBIAN_BASE = "localhost/debian:bookworm"
SUITE = "bookworm"

# crun, Debian's default runtime, refuses to start containers on this kernel's cgroup setup;
# setting rlimits inside a container is not permitted here either.
CONTAINERS_CONF = """\
# Written by deploy/local/image.py; used through CONTAINERS_CONF by every podman call.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
"""

# Like Debian's own slim images: no manuals, docs or translations in the base.
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
"""


class ImageError(StackError):
    """A problem the user must fix; the message says what and how."""


def version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


# -- podman -----------------------------------------------------------------------------------


def podman_env() -> dict[str, str]:
    PODMAN_CONF.parent.mkdir(parents=True, exist_ok=True)
    if not PODMAN_CONF.exists() or PODMAN_CONF.read_text() != CONTAINERS_CONF:
        PODMAN_CONF.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(PODMAN_CONF)}


def podman(
    *args: str, check: bool = True, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    """One podman call with the project's config."""
    result = subprocess.run(
        ["podman", *args], env=podman_env(), text=True, capture_output=capture, check=False
    )
    if check and result.returncode != 0:
        detail = f":\n{result.stderr}" if capture else ""
        raise ImageError(f"podman {' '.join(args[:2])} failed (exit {result.returncode}){detail}")
    return result


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


def ensure_tools() -> None:
    # catatonit: the pause process of pods (`podman kube play`).
    wanted = {"podman": "podman", "runc": "runc", "debootstrap": "debootstrap",
              "catatonit": "catatonit"}  # fmt: skip
    missing = [pkg for tool, pkg in wanted.items() if shutil.which(tool) is None]
    if missing:
        _apt_install(missing)
    still = [tool for tool in wanted if shutil.which(tool) is None]
    if still:
        raise ImageError(f"still missing after install: {', '.join(still)}")


# -- the Debian base --------------------------------------------------------------------------


def debian_mirror() -> str:
    """The Debian mirror the machine's apt already uses (deb822 or one-line sources)."""
    if os.environ.get("IMAGE_DEBIAN_MIRROR"):
        return os.environ["IMAGE_DEBIAN_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file() or not path.name.endswith((".list", ".sources")):
            continue
        text = path.read_text(errors="replace")
        uris = re.findall(r"^URIs:\s*(\S+)", text, re.MULTILINE)
        uris += re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", text, re.MULTILINE)
        for uri in uris:
            if "security" not in uri and uri.rstrip("/").endswith("/debian"):
                return uri
    return "http://deb.debian.org/debian"


def ensure_debian_base() -> None:
    if image_exists(DEBIAN_BASE):
        return
    if not ROOTFS_TAR.exists():
        _debootstrap()
    print(f"image: importing {ROOTFS_TAR.name} as {DEBIAN_BASE}", flush=True)
    podman("import", "--quiet", str(ROOTFS_TAR), DEBIAN_BASE, capture=True)


def _debootstrap() -> None:
    mirror = debian_mirror()
    rootfs = ROOTFS_TAR.parent / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.mkdir(parents=True)
    print(f"image: debootstrap {SUITE} from {mirror} (once, about a minute)", flush=True)
    (rootfs / "etc" / "dpkg" / "dpkg.cfg.d").mkdir(parents=True)
    (rootfs / "etc" / "dpkg" / "dpkg.cfg.d" / "excludes").write_text(DPKG_EXCLUDES)
    result = subprocess.run(
        ["debootstrap", "--variant=minbase", SUITE, str(rootfs), mirror],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ImageError(f"debootstrap failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (rootfs / leftover).glob("*"):
            if item.is_file():
                item.unlink()
    partial = ROOTFS_TAR.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
    partial.rename(ROOTFS_TAR)
    shutil.rmtree(rootfs)


# -- the wheelhouse and the build context -----------------------------------------------------


def ensure_wheels() -> Path:
    """Wheels of the gateway's runtime dependencies (rebuilt when pyproject.toml changes) and
    of the gateway itself (rebuilt every time: it is a few seconds)."""
    pip = REPO / ".venv" / "bin" / "pip"
    if not pip.exists():
        raise ImageError("no .venv: run `make venv` first")
    pyproject = (REPO / "pyproject.toml").read_bytes()
    stamp = WHEELS / ".pyproject.sha256"
    digest = hashlib.sha256(pyproject).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        print("image: building the dependency wheelhouse on the host", flush=True)
        shutil.rmtree(WHEELS, ignore_errors=True)
        _pip(pip, "wheel", "-q", "-w", str(WHEELS), str(REPO))
        stamp.write_text(digest)
    own = CACHE / "image" / "own-wheel"
    shutil.rmtree(own, ignore_errors=True)
    _pip(pip, "wheel", "-q", "--no-deps", "-w", str(own), str(REPO))
    (wheel,) = own.glob("hitl_gateway-*.whl")
    return wheel


def _pip(pip: Path, *args: str) -> None:
    result = subprocess.run([str(pip), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImageError(f"pip {args[0]} failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")


def assemble_context(own_wheel: Path) -> Path:
    """The Containerfile's inputs only: no .venv, .git or caches go to the builder."""
    shutil.rmtree(CONTEXT, ignore_errors=True)
    (CONTEXT / "wheels").mkdir(parents=True)
    for wheel in WHEELS.glob("*.whl"):
        if not wheel.name.startswith("hitl_gateway-"):
            os.link(wheel, CONTEXT / "wheels" / wheel.name)
    shutil.copy2(own_wheel, CONTEXT / "wheels" / own_wheel.name)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, CONTEXT / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "src", CONTEXT / "src", ignore=ignore)
    shutil.copytree(REPO / "configs", CONTEXT / "configs", ignore=ignore)
    return CONTEXT


# -- commands ---------------------------------------------------------------------------------


def size_mb(ref: str) -> float:
    out = podman("image", "inspect", "--format", "{{.Size}}", ref, capture=True).stdout
    return int(out.strip()) / 1_000_000


def build() -> str:
    started = time.monotonic()
    ensure_tools()
    podman_env()
    base = os.environ.get("IMAGE_BASE") or DEBIAN_BASE
    if base == DEBIAN_BASE:
        ensure_debian_base()
    context = assemble_context(ensure_wheels())
    tag = f"{IMAGE}:{version()}"
    print(f"image: podman build {tag} (base {base})", flush=True)
    # --format docker: the OCI image format has no HEALTHCHECK, and podman would drop it.
    podman(
        "build", "--network", "host", "--format", "docker",
        "--build-arg", f"BASE={base}", "--build-arg", f"VERSION={version()}",
        "-t", tag, "-t", f"{IMAGE}:latest", "-f", str(CONTAINERFILE), str(context),
    )  # fmt: skip
    took = time.monotonic() - started
    print(f"image: {tag} built in {took:.1f}s, size {size_mb(tag):.1f} MB", flush=True)
    return tag


def size() -> None:
    tag = f"{IMAGE}:{version()}"
    if not image_exists(tag):
        raise ImageError(f"{tag} is not built; run `make image`")
    print(f"{tag} {size_mb(tag):.1f} MB")


def remove(base: bool) -> None:
    refs = [f"{IMAGE}:{version()}", f"{IMAGE}:latest", *([DEBIAN_BASE] if base else [])]
    for ref in refs:
        if image_exists(ref):
            podman("rmi", ref, capture=True)
            print(f"image: removed {ref}")
    podman("image", "prune", "--force", capture=True)  # the build stages' dangling layers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="image", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("build", help="install what is missing and build the image (default)")
    sub.add_parser("size", help="print the image's size")
    rm = sub.add_parser("remove", help="remove the image")
    rm.add_argument("--base", action="store_true", help="also remove the Debian base image")
    args = parser.parse_args(argv)
    try:
        if args.command in (None, "build"):
            build()
        elif args.command == "size":
            size()
        else:
            remove(args.base)
    except StackError as exc:
        print(f"image: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
