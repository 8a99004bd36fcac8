"""User errors: one line on stderr and exit status 2; a bug keeps its traceback.

Every exception that means "the input is wrong" (a config key or value, a path, a model spec, a
checkpoint, a results file) derives from :class:`UserError`, and its message names the problem and the
fix. :func:`run_main` is the entry point of the ``xmoco-zoo`` command and of every recipe script: it turns
a ``UserError`` (and the few library errors that can only come from the user's input, such as an
``hf-hub:`` repo that does not exist) into ``error: <message>`` and exit status 2. ``--debug`` on the
command line or ``XMOCO_DEBUG=1`` shows the full traceback instead. Any other exception is a bug and
propagates as it is.

This module imports nothing from the package, so every module can raise these errors.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_USER_ERROR = 2  # what argparse uses for a bad command line
DEBUG_FLAG = "--debug"
DEBUG_ENV = "XMOCO_DEBUG"


class UserError(Exception):
    """The user's input is wrong (not a bug): the message says what, and how to fix it."""


class ConfigError(UserError, ValueError):
    """A config file, override or option value that does not fit the schema."""


class OptionError(UserError, TypeError):
    """A keyword option a function does not take, or an option value of the wrong type."""


class InputNotFoundError(UserError, FileNotFoundError):
    """A file or folder named by the user does not exist."""


class DatasetNotFoundError(InputNotFoundError):
    """The data is not where the config says; the message lists where we looked and how to get it."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` that adds it."""


def debug_requested(argv: Sequence[str] = ()) -> bool:
    """``--debug`` in ``argv`` or ``XMOCO_DEBUG`` set to anything but ``""``/``0``: show tracebacks."""
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def run_main(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> int:
    """Run a command's ``main(argv)``; a user error becomes one ``error:`` line on stderr and status 2.

    ``--debug`` is taken out of ``argv`` before ``main`` sees it. Use it as
    ``sys.exit(run_main(main))`` in a script's ``__main__`` block.

    Args:
        main: the command; returns an exit status (an int) or anything else for success.
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: ``main``'s when it returns an int, else 0; 2 after a user error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        result = main(argv)
    except Exception as e:
        message = user_message(e)
        if message is None or debug:
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    return result if isinstance(result, int) else 0


def user_message(e: BaseException) -> str | None:
    """The one-line message of a user error, or ``None`` when ``e`` is a bug (it keeps its traceback)."""
    if isinstance(e, UserError):
        return _from_worker(str(e)) or type(e).__name__
    return _library_message(e)


_WORKER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


def _from_worker(message: str) -> str:
    """A DataLoader worker's error is re-raised with the worker's traceback as its message: keep the last line
    (``module.Class: message``) without the class."""
    if not _WORKER.match(message):
        return message
    last = message.rstrip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


def _first_line(e: BaseException) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return lines[0] if lines else type(e).__name__


def _library_message(e: BaseException) -> str | None:
    """Errors raised by huggingface_hub and OmegaConf that can only come from the user's input."""
    module = type(e).__module__ or ""
    if module.startswith("huggingface_hub"):
        return hub_message(e)
    if module.startswith("omegaconf"):
        from omegaconf.errors import (
            GrammarParseError,
            InterpolationResolutionError,
            MissingMandatoryValue,
            ValidationError,
        )

        if isinstance(
            e, (ValidationError, InterpolationResolutionError, MissingMandatoryValue, GrammarParseError)
        ):
            key = getattr(e, "full_key", None)
            where = f" (key: {key})" if key else ""
            return f"config: {_first_line(e)}{where} — fix the value in the config file or the key=value override"
    return None


def hub_message(e: BaseException, what: str = "") -> str | None:
    """A one-line message for a Hugging Face Hub error that means a wrong repo id, revision, file or token.

    Args:
        e: the exception raised by huggingface_hub (or by timm through it).
        what: what was being loaded, e.g. ``hf-hub:org/name``; prefixed to the message.

    Returns:
        The message, or ``None`` when ``e`` is not such an error.
    """
    from huggingface_hub import errors as hf

    prefix = f"{what}: " if what else ""
    if isinstance(e, hf.GatedRepoError):
        return (
            f"{prefix}the repository is gated — accept its terms on the Hub and log in "
            "(HF_TOKEN or `hf auth login`)"
        )
    if isinstance(e, hf.RepositoryNotFoundError):
        return (
            f"{prefix}no such repository on the Hub, or it is private — check the id (hf-hub:ORG/NAME); "
            "for a private one log in (HF_TOKEN or `hf auth login`)"
        )
    if isinstance(e, hf.RevisionNotFoundError):
        return f"{prefix}no such revision (branch, tag or commit) — check it, or leave it out for main"
    if isinstance(e, hf.LocalEntryNotFoundError):
        return (
            f"{prefix}not in the local Hugging Face cache and the Hub was not reached (HF_HUB_OFFLINE is set, or "
            "no network) — download it once online, or use a local-dir:PATH model folder"
        )
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, hf.HfHubHTTPError) and status in (401, 403):
        return (
            f"{prefix}the Hub refused the request ({_first_line(e)}) — check your token (HF_TOKEN or "
            "`hf auth login`) and its rights on the repository"
        )
    if isinstance(e, hf.EntryNotFoundError):
        return (
            f"{prefix}the repository lacks a file it needs ({_first_line(e)}) — "
            "is it a timm model (config.json + model.safetensors)?"
        )
    return None
