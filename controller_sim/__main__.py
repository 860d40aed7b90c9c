"""``python -m controller_sim [options]``: the simulator in the foreground, without twistd.

Logs go to stderr; stdout gets exactly one line, ``listening on PORT``, once the endpoint is
listening, so that a parent process can start it on port 0 and learn the port.
"""

from __future__ import annotations

import sys

from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.python import usage
from twisted.python.failure import Failure

from controller_sim.simulator import Simulator
from controller_sim.tap import Options, SimService


def main(argv: list[str] | None = None) -> int:
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"{options}\nerror: {e}", file=sys.stderr)
        return 2
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    from twisted.internet import reactor

    exit_code = [0]

    def listening(port: int) -> None:
        print(f"listening on {port}", flush=True)

    def failed(_: Failure) -> None:
        exit_code[0] = 1
        reactor.callWhenRunning(reactor.stop)

    svc = SimService(options["port"], Simulator(options["sim_config"]), listening, failed, reactor)
    reactor.callWhenRunning(svc.startService)
    reactor.addSystemEventTrigger("before", "shutdown", svc.stopService)
    reactor.run()
    return exit_code[0]


if __name__ == "__main__":
    sys.exit(main())
