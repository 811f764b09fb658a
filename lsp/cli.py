"""The ``tealtab`` command: ``lsp`` (the server), ``complete`` (one completion),
``calibrate`` (TEAL activation sparsity for a model), ``doctor`` (the setup)
and ``demo`` (a sample file through the server).

Exit codes: 0 success, 1 failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import shutil
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from tealtab.completion.languages import language_for_path

from .settings import QUANTIZATIONS

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

LOG_LEVELS = ("debug", "info", "warning", "error")


class UsageError(Exception):
    """A command line that cannot be run as given (exit code 2)."""


def sparsity_argument(text: str) -> float | str:
    """``--sparsity``: ``auto`` or a number from 0 to 0.7 (argparse type)."""
    from .settings import parse_sparsity

    value: Any = text
    if text.strip().lower() != "auto":
        try:
            value = float(text)
        except ValueError:
            value = text
    parsed, error = parse_sparsity(value)
    if error is not None:
        raise argparse.ArgumentTypeError(f"{error}, got {text!r}")
    return parsed  # type: ignore[return-value]


class ProgressBar:
    """A ``progress(message, percentage)`` callback that draws on ``stream`` (stderr).

    On a terminal: one line, redrawn in place with ``\r`` (a bar, the
    percentage and the message, cut to the terminal's width); :meth:`finish`
    ends the line. Otherwise (a pipe, a log file): one plain line per call.
    A ``None`` percentage keeps the last one.
    """

    WIDTH = 24

    def __init__(self, stream: TextIO | None = None, prefix: str = "tealtab") -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty()) if callable(isatty) else False
        self.prefix = prefix
        self.percentage: int | None = None
        self._drawn = 0

    def render(self, message: str) -> str:
        """The bar line for ``message`` at the current percentage."""
        if self.percentage is None:
            return f"[{' ' * self.WIDTH}]      {message}"
        filled = self.WIDTH * self.percentage // 100
        return f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.percentage:3d}% {message}"

    def __call__(self, message: str, percentage: int | None = None) -> None:
        if percentage is not None:
            self.percentage = max(0, min(100, int(percentage)))
        if self.tty:
            width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
            line = self.render(message)[:width]
            self.stream.write("\r" + line + " " * max(0, self._drawn - len(line)))
            self._drawn = len(line)
        else:
            suffix = "" if percentage is None else f" ({self.percentage}%)"
            self.stream.write(f"{self.prefix}: {message}{suffix}\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the redrawn line (before anything else is written to the stream)."""
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
        self._drawn = 0
        self.percentage = None

    def say(self, message: str) -> None:
        """A line of its own (after ending the bar's)."""
        self.finish()
        self.stream.write(f"{self.prefix}: {message}\n")
        self.stream.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tealtab", description="Local code-completion language server.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    lsp = commands.add_parser("lsp", help="run the language server on stdin/stdout")
    lsp.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="log level (default info)")
    lsp.add_argument("--log-file", help="append the log to this file instead of stderr")
    # Many LSP clients (vscode-languageclient's TransportKind.stdio among them)
    # add --stdio; stdio is the only transport, so it is accepted and changes nothing.
    lsp.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (the default and only transport)")

    complete = commands.add_parser("complete", help="complete at FILE:LINE:COL and print the candidates")
    complete.add_argument("location", metavar="FILE:LINE:COL", help="1-based line and column (in characters)")
    complete.add_argument("-n", "--candidates", type=int, default=3, metavar="N", help="candidates (default 3)")
    complete.add_argument("--model", help="model to load (default: this machine's default model)")
    complete.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    complete.add_argument("--max-new-tokens", type=int, default=128, metavar="K", help="default 128")
    complete.add_argument("--temperature", type=float, default=0.2, help="default 0.2")
    complete.add_argument("--language", help="languageId (default: from the file extension)")
    complete.add_argument("--sparsity", type=sparsity_argument, default="auto", metavar="S",
                          help="TEAL activation sparsity: auto (the calibrated default, dense without a "
                               "calibration) or 0 to 0.7; a number calibrates the model first if needed")
    complete.add_argument("--quantization", choices=QUANTIZATIONS, default="auto",
                          help="weights in int8 or NF4 (bitsandbytes formats; quantized and cached on first use); "
                               "auto (default): int8 on the CPU, none on a GPU")
    complete.add_argument("--log-level", choices=LOG_LEVELS, default="warning", help="default warning")
    remote_arguments(complete)

    calibrate = commands.add_parser("calibrate", help="calibrate TEAL activation sparsity for a model (slow)")
    calibrate.add_argument("--model", help="model to calibrate (default: this machine's default model)")
    calibrate.add_argument("--corpus", metavar="DIR",
                           help="a folder of source files to calibrate on (default: Python's standard library)")
    calibrate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    calibrate.add_argument("--log-level", choices=LOG_LEVELS, default="warning", help="default warning")

    doctor = commands.add_parser("doctor", help="report the Python, torch, GPU and model setup; check a remote endpoint")
    doctor.add_argument("--model", help="also check this model setting; a remote endpoint gets a FIM request")
    remote_arguments(doctor)

    demo = commands.add_parser("demo", help="complete a sample file through the real server")
    demo.add_argument("file", nargs="?", help="a file with '# tealtab: complete here' lines (default: bundled sample)")
    demo.add_argument("--model", help="model to load (default: this machine's default model)")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    demo.add_argument("--sparsity", type=sparsity_argument, default=None, metavar="S",
                      help="the server's sparsity setting: auto (its default) or 0 to 0.7")
    demo.add_argument("--quantization", choices=QUANTIZATIONS, default=None,
                      help="the server's quantization setting: auto (its default: int8 on the CPU, "
                           "none on a GPU), none, int8 or nf4")
    return parser


def remote_arguments(parser: argparse.ArgumentParser) -> None:
    """The remote-endpoint options (the settings remoteModel, apiKeyEnv, remoteTimeout)."""
    parser.add_argument("--remote-model", metavar="NAME", help="with --model openai:URL, llamacpp:URL or ollama:URL: "
                        "the model name the server serves (default: its first)")
    parser.add_argument("--api-key-env", metavar="VAR", help="the environment variable that holds the API key")
    parser.add_argument("--remote-timeout", type=float, default=10.0, metavar="S", help="seconds (default 10)")


def remote_settings(args: argparse.Namespace):
    """Settings for the model and remote options on the command line."""
    from .settings import Settings

    if not 0.5 <= args.remote_timeout <= 600:
        raise UsageError("--remote-timeout must be from 0.5 to 600 seconds")
    return Settings(model=args.model, device=getattr(args, "device", "auto"),
                    quantization=getattr(args, "quantization", "auto"), remote_model=args.remote_model,
                    api_key_env=args.api_key_env, remote_timeout=args.remote_timeout)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tealtab`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    try:
        if args.command == "lsp":
            return _run_lsp(args)
        if args.command == "complete":
            return _run_complete(args)
        if args.command == "calibrate":
            return _run_calibrate(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args.file, model=args.model, device=args.device, sparsity=args.sparsity,
                            quantization=args.quantization)
        from .doctor import run_doctor

        return run_doctor(remote_settings(args))
    except UsageError as exc:
        parser.error(str(exc))  # exits 2
    except KeyboardInterrupt:
        return EXIT_FAILURE
    return EXIT_FAILURE


def _run_lsp(args: argparse.Namespace) -> int:
    from tealtab.engine.env import return_freed_memory

    from .framing import serve_stdio
    from .log import setup_logging
    from .server import create_server, exit_now, exit_on_signals

    return_freed_memory()  # before any thread starts: a server frees prefill buffers for good
    setup_logging(args.log_level, args.log_file)
    server = create_server()
    exit_on_signals()
    # Not server.start_io(): pygls' stdin reader goes deaf or dies on a malformed frame (lsp/framing.py).
    serve_stdio(server)
    # Threads may still block in a stdin read or a generation: leave without joining them.
    exit_now(server.exit_code)
    return server.exit_code


def parse_location(location: str) -> tuple[Path, int, int]:
    """``FILE:LINE:COL`` -> (path, line, column), 1-based."""
    parts = location.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise UsageError(f"expected FILE:LINE:COL, got {location!r}")
    path, line, column = parts
    try:
        line_number, column_number = int(line), int(column)
    except ValueError:
        raise UsageError(f"LINE and COL must be integers in {location!r}") from None
    if line_number < 1 or column_number < 1:
        raise UsageError(f"LINE and COL are 1-based, got {location!r}")
    return Path(path), line_number, column_number


def offset_of(text: str, line: int, column: int) -> int:
    """Code-point offset of the 1-based ``line`` and ``column`` (characters) in ``text``."""
    from .positions import line_starts

    starts = line_starts(text)
    if line > len(starts):
        raise UsageError(f"line {line} is past the end of the file ({len(starts)} lines)")
    start = starts[line - 1]
    end = starts[line] if line < len(starts) else len(text)
    content = text[start:end].rstrip("\r\n")
    if column > len(content) + 1:
        raise UsageError(f"column {column} is past the end of line {line} ({len(content)} characters)")
    return start + column - 1


def _run_complete(args: argparse.Namespace) -> int:
    from .log import setup_logging

    setup_logging(args.log_level)
    path, line, column = parse_location(args.location)
    if args.candidates < 1:
        raise UsageError("-n must be at least 1")
    if args.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        print(f"tealtab: cannot read {path}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    offset = offset_of(text, line, column)
    language = args.language or language_for_path(path) or "plaintext"

    from .worker import open_backend, shown_model

    bar = ProgressBar()
    settings = remote_settings(args)
    try:
        bar.say(f"loading {shown_model(args.model)} on {'its server' if settings.remote else args.device}")
        load_started = time.monotonic()
        backend, model = open_backend(settings, progress=bar)
    except Exception as exc:
        bar.say(f"could not load the model: {exc}")
        return EXIT_FAILURE
    load_ms = 1000 * (time.monotonic() - load_started)
    bar.finish()
    try:
        apply_sparsity(backend, args.sparsity, model, bar)
    except Exception as exc:
        bar.say(f"could not apply sparsity {args.sparsity}: {exc}")
        return EXIT_FAILURE

    from tealtab.completion.pipeline import CompletionRequest, complete
    from tealtab.completion.project import ProjectView

    request = CompletionRequest(
        text=text,
        offset=offset,
        language_id=language,
        n=args.candidates,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        request_id="cli",
        # As an editor opened in the current directory: context from the files this one imports.
        project=ProjectView(path=str(path.resolve()), roots=(os.getcwd(),)),
    )
    started = time.monotonic()
    try:
        outcome = complete(backend, request)
    except Exception as exc:
        print(f"tealtab: completion failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    elapsed_ms = 1000 * (time.monotonic() - started)
    _print_outcome(outcome, text, load_ms, elapsed_ms)
    return EXIT_OK


def apply_sparsity(backend, requested: float | str, model: str, bar: ProgressBar) -> None:
    """Install the ``--sparsity`` level on ``backend``, calibrating the model first when a number
    above 0 has no calibration (the bar shows its progress); says on stderr what is in effect."""
    from .sparsity_control import apply_to_backend, describe

    state = apply_to_backend(backend, requested, model)
    if state.needs_calibration:
        bar.say(f"{model} has no calibration for activation sparsity yet: calibrating (minutes on a CPU)")
        calibration = _calibrate(backend, None, bar)
        bar.say(f"calibration saved to {calibration.path}")
        state = apply_to_backend(backend, requested, model)
    bar.say(describe(state))


def _calibrate(backend, corpus: Path | None, bar: ProgressBar):
    from tealtab.engine import calibration

    try:
        return calibration.calibrate(backend, corpus, progress=bar)
    finally:
        bar.finish()


def _run_calibrate(args: argparse.Namespace) -> int:
    from .log import setup_logging

    setup_logging(args.log_level)
    corpus = Path(args.corpus) if args.corpus else None
    if corpus is not None and not corpus.is_dir():
        raise UsageError(f"--corpus must be a folder of source files, got {args.corpus!r}")

    from tealtab.engine import loading

    bar = ProgressBar()
    try:
        model = args.model or loading.default_model(args.device)
        bar.say(f"loading {model} on {args.device}")
        backend = loading.load_backend(model, args.device, progress=bar)
    except Exception as exc:
        bar.say(f"could not load the model: {exc}")
        return EXIT_FAILURE
    bar.finish()
    if not callable(getattr(backend, "set_sparsity", None)):
        bar.say(f"{model} has no activation sparsity to calibrate (a remote model?)")
        return EXIT_FAILURE
    bar.say(f"calibrating activation sparsity for {model} on {corpus or 'the standard library'} "
            "(minutes on a CPU)")
    started = time.monotonic()
    try:
        calibration = _calibrate(backend, corpus, bar)
    except Exception as exc:
        bar.say(f"calibration failed: {type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    _print_calibration(calibration, time.monotonic() - started)
    return EXIT_OK


def _print_calibration(calibration, seconds: float) -> None:
    out = sys.stdout
    levels = " ".join(f"{level:g}" for level in calibration.levels)
    out.write(f"calibrated levels  {levels}\n")
    perplexity = getattr(calibration, "perplexity", None) or {}
    if perplexity:
        out.write("held-out perplexity  " + "  ".join(
            f"{'dense' if not level else f'{level:g}'} {value:.3f}" for level, value in sorted(perplexity.items())
        ) + "\n")
    out.write(f"default level      {calibration.default_level:g} (the largest within 5% of dense perplexity; "
              "0: none)\n")
    out.write(f"saved to           {calibration.path}\n")
    out.write(f"took               {seconds:.0f} s\n")
    out.flush()


def _print_outcome(outcome, text: str, load_ms: float, elapsed_ms: float) -> None:
    from .positions import position_at

    out = sys.stdout
    for number, item in enumerate(outcome.items, 1):
        start, end = position_at(text, item.start, "utf-32"), position_at(text, item.end, "utf-32")
        out.write(
            f"----- candidate {number}  score {item.score:.3f}  replaces "
            f"{start.line + 1}:{start.character + 1}-{end.line + 1}:{end.character + 1} -----\n"
        )
        out.write(item.insert_text)
        if not item.insert_text.endswith("\n"):
            out.write("\n")
    if not outcome.items:
        out.write("----- no candidates -----\n")
    generation = getattr(outcome, "generation", None)
    out.write(
        f"----- {len(outcome.items)} candidate(s) in {elapsed_ms:.0f} ms "
        f"(mode {getattr(outcome, 'mode', '?')}, prompt tokens {getattr(outcome, 'prompt_tokens', '?')}, "
        f"reused {getattr(generation, 'reused_tokens', '-')}; model loaded in {load_ms:.0f} ms) -----\n"
    )
    out.flush()


if __name__ == "__main__":
    sys.exit(main())
