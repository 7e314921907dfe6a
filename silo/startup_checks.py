"""Start-up checks that turn a new user's mistakes into one line with a hint.

Why here and not in the runtime: these run before logging is configured and before any
port or store is touched, so a refused start prints exactly one line on stderr (no gRPC
native log noise, no half-started store), and the runtime stays about running.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

from grainery.silo.config import SiloConfig
from grainery.silo.registry import GrainRegistry
from grainery.silo.startup_error import StartupError
from grainery.silo.storage.embedded import check_data_dir_free, port_is_free, running_store_url


def _where(filename: str | None, line: int | None) -> str:
    """``file:line``, relative to the working directory when it is below it."""
    if not filename:
        return "<unknown file>"
    path = Path(filename)
    with_line = f":{line}" if line else ""
    try:
        return f"{path.resolve().relative_to(Path.cwd())}{with_line}"
    except ValueError:
        return f"{filename}{with_line}"


def _importing_frame(exc: BaseException) -> tuple[str | None, int | None]:
    """The innermost frame of real code (not importlib's) in the traceback: the import line."""
    found: tuple[str | None, int | None] = (None, None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if not frame.filename.startswith("<frozen") and "importlib" not in frame.filename:
            found = (frame.filename, frame.lineno)
    return found


def _is_prefix_of(name: str | None, module: str) -> bool:
    return bool(name) and (module == name or module.startswith(f"{name}."))


def import_grains_module(registry: GrainRegistry, module: str) -> None:
    """Import one ``--grains`` module and register its grains, or raise a StartupError."""
    if module.endswith(".py") or os.sep in module:
        name = module.removesuffix(".py").replace(os.sep, ".").strip(".")
        raise StartupError(
            f"--grains takes a module name, not a file: {module!r}",
            f"use --grains {name}",
        )
    try:
        registry.load_modules([module])
    except SyntaxError as exc:
        raise StartupError(
            f"syntax error in grains module {module!r} at {_where(exc.filename, exc.lineno)}: "
            f"{exc.msg}",
            "fix that line; python -m py_compile shows the same error",
        ) from None
    except ModuleNotFoundError as exc:
        if _is_prefix_of(exc.name, module):
            raise StartupError(
                f"no grains module named {module!r} (working directory {Path.cwd()})",
                f"run from the directory that holds {module.replace('.', '/')}.py, "
                "or put that directory on PYTHONPATH",
            ) from None
        filename, line = _importing_frame(exc)
        raise StartupError(
            f"grains module {module!r} imports {exc.name!r}, which is not installed "
            f"(imported at {_where(filename, line)})",
            f"install the package that provides {exc.name!r} into this Python environment",
        ) from None
    except Exception as exc:  # noqa: BLE001 - any error in the user's module body
        filename, line = _importing_frame(exc)
        raise StartupError(
            f"grains module {module!r} failed to import: {type(exc).__name__}: {exc} "
            f"(at {_where(filename, line)})",
            f"python -c 'import {module}' shows the traceback",
        ) from None


def load_grains(config: SiloConfig, registry: GrainRegistry) -> None:
    for module in config.grains:
        import_grains_module(registry, module)
    if not registry.names():
        raise StartupError(
            f"no Grain subclasses found in {', '.join(config.grains)}",
            "define `class MyGrain(Grain)` in that module (imported grains do not count)",
        )


def check_store(config: SiloConfig) -> None:
    """The store the silo will use exists (--join) or its data directory is free (embedded)."""
    if config.redis:
        return
    if config.join:
        running_store_url(config.join)
    else:
        check_data_dir_free(config.data_dir)


def check_port(config: SiloConfig) -> None:
    """The gRPC, metrics and dashboard ports are free. Checked before gRPC binds, since gRPC's
    C core logs a failed bind to stderr itself (several lines, whatever Python does with the
    error)."""
    if config.port and not port_is_free(config.host, config.port):
        raise StartupError(
            f"port {config.host}:{config.port} is in use (another silo?)",
            "pick another with --port PORT (0 = any free port)",
        )
    if config.metrics_port and not port_is_free(config.metrics_host, config.metrics_port):
        raise StartupError(
            f"metrics port {config.metrics_host}:{config.metrics_port} is in use",
            "pick another with --metrics-port PORT",
        )
    if config.dashboard_port and not port_is_free(config.dashboard_host, config.dashboard_port):
        raise StartupError(
            f"dashboard port {config.dashboard_host}:{config.dashboard_port} is in use",
            "pick another with --dashboard-port PORT (0 = any free port)",
        )
