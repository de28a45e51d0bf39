"""`python -m routing.simulator --port N [--host 127.0.0.1] [--delay-ms 0]`."""

from __future__ import annotations

import argparse

from routing.simulator.server import DEFAULT_HOST, DEFAULT_PORT, run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m routing.simulator",
        description="Fake AIMLAPI, OpenAI, Anthropic and Gemini endpoints.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument(
        "--delay-ms",
        type=int,
        default=None,
        help="added before every answer (default: $SIM_DELAY_MS or 0)",
    )
    args = parser.parse_args(argv)
    run(host=args.host, port=args.port, delay_ms=args.delay_ms)


if __name__ == "__main__":
    main()
