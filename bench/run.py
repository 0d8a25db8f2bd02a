"""``python -m bench.run [--quick]``: the whole benchmark, relay and baseline, in one command.

Process layout (every socket on 127.0.0.1): this process is the load generator and hosts the
token issuer in threads (:class:`relay.devtools.issuer.LocalIssuer`); ``bench.emu`` is the Neo +
Teams helper process; the system under test — ``relay serve`` (real SQLite in a temp dir, real
JWT validation and msal tokens), then ``bench.baseline`` — runs alone in its own process. Phases
per system: warm-up, open-loop acknowledgement latency, then streaming steps of rising
concurrency until relay-added p99 exceeds the target (or the list ends). Every phase is bounded in
count and time; every child is stopped in ``finally`` (its stdin also closes, which ends it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import BOTS, HOST, ISSUER, NEO_KEY, load_average, machine
from bench.helpers import Helper, Helpers
from bench.load import Target, Traffic
from bench.report import render_table, summarise
from relay.devtools.issuer import LocalIssuer

PRESETS: dict[str, dict[str, Any]] = {
    "full": {
        "ack_rate": 200.0,
        "ack_seconds": 20.0,
        "steps": [100, 250, 500, 1000, 1500],
        "chunks": 150,
        "chunk_rate": 10.0,
        "paragraph": 10,
        "interval": 1.5,
        "ramp": 3.0,
        "teams_shards": 4,
        "neo_shards": 4,
    },
    "quick": {
        "ack_rate": 100.0,
        "ack_seconds": 5.0,
        "steps": [50, 100],
        "chunks": 60,
        "chunk_rate": 10.0,
        "paragraph": 10,
        "interval": 1.5,
        "ramp": 1.0,
        "teams_shards": 2,
        "neo_shards": 1,
    },
    "smoke": {  # the test suite's run: seconds, not minutes
        "ack_rate": 20.0,
        "ack_seconds": 1.0,
        "steps": [4],
        "chunks": 12,
        "chunk_rate": 20.0,
        "paragraph": 4,
        "interval": 0.3,
        "ramp": 0.2,
        "teams_shards": 2,
        "neo_shards": 2,  # the shared-port path, exercised by the test suite
    },
}
P99_TARGET_MS = 50.0
KEPT_UP_SLACK = 2.0  # s after an ack phase within which a server that kept up has answered all
RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the benchmark process dies, however it dies
    (Linux PR_SET_PDEATHSIG), so no relay outlives an interrupted run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def clean_env() -> dict[str, str]:
    """The caller's environment without anything that would configure the relay."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "NEO_"))}


def write_bots(path: Path) -> dict[str, str]:
    env, lines = {}, []
    for i, bot in enumerate(BOTS):
        env[f"BENCH_BOT_SECRET_{i}"] = bot.secret
        lines += [
            "[[bots]]",
            f'app_id = "{bot.app_id}"',
            'app_type = "SingleTenant"',
            f'tenant_id = "{bot.tenant_id}"',
            f'name = "{bot.name}"',
            f'secret_env = "BENCH_BOT_SECRET_{i}"',
            "",
        ]
    path.write_text("\n".join(lines))
    return env


class Bench:
    def __init__(self, args: argparse.Namespace, cfg: dict[str, Any]) -> None:
        self.args, self.cfg = args, cfg
        self.tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
        self.issuer = LocalIssuer(issuer=ISSUER)
        self.children: list[subprocess.Popen[bytes]] = []
        self.neo: list[Helper]
        self.teams: list[Helper] = []
        self.profiles = 0
        # The baseline runs on the loop the relay picks, so the ratio compares like with like.
        self.event_loop = relay_event_loop(args.relay_env)

    # -- processes ---------------------------------------------------------------------------------

    def spawn(self, argv: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / log_name, "wb")  # noqa: SIM115 - closed with the directory
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            preexec_fn=_die_with_parent,
        )
        self.children.append(proc)
        return proc

    def start_helpers(self) -> None:
        self.issuer.start()
        for bot in BOTS:
            self.issuer.register_client(bot.app_id, bot.secret, bot.tenant_id)
        c = self.cfg
        common = ["--max-seconds", str(self.args.max_seconds)]
        neo = ["--role", "neo", "--chunks", str(c["chunks"]), "--chunk-rate", str(c["chunk_rate"])]
        neo += ["--paragraph", str(c["paragraph"])]
        first = self._helper("neo0", [*neo, *common])
        port = ["--port", first.url.rsplit(":", 1)[1]]  # the other shards share its port
        n = self.args.neo_shards or c["neo_shards"]
        self.neo = [first, *(self._helper(f"neo{i}", [*neo, *port, *common]) for i in range(1, n))]
        teams = ["--role", "teams", "--interval", str(c["interval"])]
        shards = self.args.teams_shards or c["teams_shards"]
        self.teams = [self._helper(f"teams{i}", [*teams, *common]) for i in range(shards)]

    def _helper(self, name: str, args: list[str]) -> Helper:
        proc = self.spawn([sys.executable, "-m", "bench.emu", *args], clean_env(), f"{name}.log")
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the helper prints its URLs once it listens
        if not line:
            raise RuntimeError(f"bench.emu {name} did not start; see {self.tmp / f'{name}.log'}")
        urls = json.loads(line)
        return Helper(name, urls["url"], urls["control"], proc.pid)

    def start_relay(self) -> Target:
        port = free_port()
        env = clean_env() | write_bots(self.tmp / "bots.toml")
        db = self.tmp / "relay.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        env |= {
            "NEO_API_KEY": NEO_KEY,
            "NEO_API_BASE_URL": self.neo[0].url,
            "RELAY_BOTS_FILE": str(self.tmp / "bots.toml"),
            "RELAY_DATABASE_URL": f"sqlite:///{db}",
            "RELAY_SERVICE_URL_ALLOWLIST": f"http://{HOST}",
            "RELAY_OPENID_METADATA_URL": self.issuer.openid_metadata_url,
            "RELAY_TOKEN_ISSUER": ISSUER,
            "RELAY_LOGIN_URL": self.issuer.login_url,
            "RELAY_LOGIN_CA_FILE": self.issuer.ca_file,
            "RELAY_STREAM_INTERVAL": str(self.cfg["interval"]),
            "RELAY_LOG_LEVEL": self.args.log_level,
            # The bench's Neo has no rate limit and the benchmark measures CPU, not waiting for
            # Neo's 1,200 requests a minute; --relay-env RELAY_NEO_RATE_LIMIT=... measures it on.
            "RELAY_NEO_RATE_LIMIT": "0",
            # A free port: a fixed one fails start-up when another relay on the machine has it.
            "RELAY_METRICS_PORT": "0",
        }
        env |= dict(kv.split("=", 1) for kv in self.args.relay_env)  # tuning experiments
        argv = [sys.executable, "-m", "relay", "serve", "--host", HOST, "--port", str(port)]
        if self.args.profile:
            # Collapsed stacks, one file per relay process (the ack phases, then each step's own
            # fresh process): bench.profile summarises.
            self.profiles += 1
            out = self.tmp / f"relay-profile-{self.profiles}.txt"
            argv = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw"]
            # --gil: only the thread holding the GIL is sampled, so idle executor threads (parked
            # in a C-level wait that py-spy cannot tell from running) do not count as work.
            argv += ["--rate", "200", "--gil", "-o", str(out)]
            argv += ["--", sys.executable, "-m", "relay", "serve", "--host", HOST]
            argv += ["--port", str(port)]
        proc = self.spawn(argv, env, f"relay-{port}.log")
        return Target("relay", f"http://{HOST}:{port}", self._python_pid(proc))

    def start_baseline(self) -> Target:
        port = free_port()
        cfg = {
            "port": port,
            "interval": self.cfg["interval"],
            "bots": [vars(b) for b in BOTS],
            "openid_metadata_url": self.issuer.openid_metadata_url,
            "issuer": ISSUER,
            "login_url": self.issuer.login_url,
            "ca_file": self.issuer.ca_file,
            "neo_url": self.neo[0].url,
            "neo_key": NEO_KEY,
            "max_seconds": self.args.max_seconds,
            "event_loop": self.event_loop,
        }
        argv = [sys.executable, "-m", "bench.baseline", json.dumps(cfg)]
        proc = self.spawn(argv, clean_env(), "baseline.log")
        return Target("baseline", f"http://{HOST}:{port}", proc.pid)

    def _python_pid(self, proc: subprocess.Popen[bytes]) -> int:
        """The relay's own pid (under py-spy it is py-spy's child)."""
        if not self.args.profile:
            return proc.pid
        for _ in range(100):
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if children:
                return int(children[0])
            time.sleep(0.1)
        raise RuntimeError("py-spy did not start the relay")

    async def wait_ready(self, target: Target, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < end:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{target.url}/readyz") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{target.name} not ready after {timeout}s; logs in {self.tmp}")

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT if self.args.profile else signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    def cleanup(self) -> None:
        for proc in reversed(self.children):
            self.stop(proc, timeout=10)
        self.issuer.stop()
        if self.args.keep:
            print(f"logs kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- phases ------------------------------------------------------------------------------------

    async def fresh(self, start: Callable[[], Target], traffic: Traffic) -> Target:
        """A new server process, ready and warmed up (its idle RSS is the next step's base)."""
        target = start()
        await self.wait_ready(target)
        await traffic.stream_step(target, len(BOTS), 0.0, 30.0, f"{target.name}-warm{target.pid}")
        return target

    async def measure(
        self, name: str, start: Callable[[], Target], steps: list[int]
    ) -> dict[str, Any]:
        """Ack phases on one process, then each streaming step on a fresh one: a step's memory
        per stream is then its own (peak − the warmed-up idle RSS), not what the phase before it
        left allocated."""
        c = self.cfg
        out: dict[str, Any] = {"pids": [], "steps": []}
        traffic = Traffic(self.issuer, self.helpers, self.helpers.http)
        say(f"{name}: warm-up")
        target = await self.fresh(start, traffic)
        out["pids"].append(target.pid)
        try:
            out["ack"] = await self.ack(traffic, target, c["ack_rate"], "ack")
            # Twice what it sustained: admission control must keep answering at once.
            rate2 = round(2 * out["ack"]["sustained_rate"], 1)
            out["ack_2x"] = await self.ack(traffic, target, rate2, "ack2x")
        finally:
            self.stop(self.children.pop())
        for n in steps:
            say(f"{name}: {n} concurrent streamed turns (fresh process)")
            target = await self.fresh(start, traffic)
            out["pids"].append(target.pid)
            try:
                answer = c["chunks"] / c["chunk_rate"]
                step = await traffic.stream_step(
                    target, n, c["ramp"], answer + c["ramp"] + 60.0, f"{name}-s{n}"
                )
            finally:
                self.stop(self.children.pop())
            step["loadavg"] = load_average()
            step["passed"] = passed(step)
            out["steps"].append(step)
            say(f"  {step_line(step)}")
            if not step["passed"]:
                break
        return out

    async def ack(self, traffic: Traffic, target: Target, rate: float, tag: str) -> dict[str, Any]:
        """One open-loop acknowledgement phase, then the wait until every turn has answered;
        the turns answered per second over both is the rate the server sustained."""
        c = self.cfg
        say(f"{target.name}: acknowledgements, {rate:.0f}/s for {c['ack_seconds']}s")
        await self.helpers.reset()
        started = time.monotonic()
        phase = await traffic.ack_phase(target, rate, c["ack_seconds"], f"{target.name}-{tag}")
        phase["loadavg"] = load_average()
        # The next phase starts from an idle server: every ack turn has answered.
        phase["drained"] = await self.drain(phase["sent"], limit=240.0)
        phase["drain_seconds"] = round(time.monotonic() - started, 1)
        # Kept up: every turn answered within a short answer's time of the phase's end (3
        # chunks, no pacing); the sustainable rate is then at least the offered one.
        phase["kept_up"] = phase["drain_seconds"] <= c["ack_seconds"] + KEPT_UP_SLACK
        achieved = phase["sent"] / phase["drain_seconds"]
        phase["sustained_rate"] = round(rate if phase["kept_up"] else achieved, 1)
        lat = phase["latency"]
        say(
            f"  ack p50 {lat['p50_ms']} ms p99 {lat['p99_ms']} ms, sustained "
            f"{phase['sustained_rate']}/s, harness saturated: {phase['harness_saturated'] or 'no'}"
            f", load {phase['loadavg'][0]}"
        )
        return phase

    async def drain(self, expected: int, limit: float) -> bool:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            counts = await self.helpers.counts()
            if counts["messages"] + counts["errors"] >= expected:
                return True
            await asyncio.sleep(0.25)
        return False

    async def run(self) -> dict[str, Any]:
        self.start_helpers()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1024), timeout=aiohttp.ClientTimeout(total=60)
        ) as http:
            self.helpers = Helpers(self.neo, self.teams, http)
            self.helpers.probe.start()
            self.helpers.machine.start()
            return await self.run_all()

    async def run_all(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "name": self.args.name,
            "date": datetime.date.today().isoformat(),
            "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
            "machine": machine() | {"event_loop": self.event_loop},
            "config": self.cfg,
        }
        say(f"event loop: {self.event_loop} (relay and baseline)")
        result["relay"] = await self.measure("relay", self.start_relay, self.cfg["steps"])
        if not self.args.no_baseline:
            steps = [s["concurrency"] for s in result["relay"]["steps"]]
            result["baseline"] = await self.measure("baseline", self.start_baseline, steps)
        result["machine"]["loadavg_end"] = load_average()
        result["summary"] = summarise(result, P99_TARGET_MS)
        return result


def relay_event_loop(relay_env: list[str]) -> str:
    """The loop ``relay serve`` will run on (relay/event_loop.py): uvloop when this interpreter
    has it and ``RELAY_UVLOOP`` (from ``--relay-env``) does not turn it off."""
    settings = dict(kv.split("=", 1) for kv in relay_env)
    if settings.get("RELAY_UVLOOP", "true").strip().lower() in ("0", "false", "no", "off"):
        return "asyncio"
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def passed(step: dict[str, Any]) -> bool:
    return (
        step["completed"] >= step["concurrency"]
        and step["errors"] == 0
        and step["violations"] == 0
        and step["relay_added"]["p99_ms"] <= P99_TARGET_MS
    )


def step_line(step: dict[str, Any]) -> str:
    ra = step["relay_added"]
    return (
        f"done {step['completed']}/{step['concurrency']}, relay-added p50 {ra['p50_ms']} ms "
        f"p99 {ra['p99_ms']} ms, {step['cpu_ms_per_turn']} ms CPU/turn, "
        f"{step['kb_per_stream']} KB/stream (idle {step['rss_idle_mb']} MB), "
        f"harness saturated: {step['harness_saturated'] or 'no'}, load {step['loadavg'][0]}"
    )


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--quick", action="store_const", dest="preset", const="quick")
    p.add_argument("--smoke", action="store_const", dest="preset", const="smoke")
    p.add_argument("--name", default=None, help="results file suffix (default: the preset)")
    p.add_argument("--steps", default=None, help="comma-separated concurrency steps")
    p.add_argument("--ack-rate", type=float, default=None)
    p.add_argument("--ack-seconds", type=float, default=None)
    p.add_argument("--chunks", type=int, default=None)
    p.add_argument("--chunk-rate", type=float, default=None)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--teams-shards", type=int, default=None, help="Teams emulator processes")
    p.add_argument(
        "--neo-shards", type=int, default=None, help="Neo emulator processes (one shared port)"
    )
    p.add_argument("--profile", action="store_true", help="record the relay with py-spy")
    p.add_argument(
        "--relay-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra relay setting, e.g. RELAY_MAX_ACTIVE_TURNS=64 (repeatable)",
    )
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, profile)")
    p.add_argument("--out", type=Path, default=None, help="results file (default bench/results)")
    p.add_argument("--max-seconds", type=float, default=1800.0, help="hard cap for children")
    p.set_defaults(preset="full")
    return p.parse_args(argv)


def config(args: argparse.Namespace) -> dict[str, Any]:
    cfg = dict(PRESETS[args.preset], preset=args.preset)
    for key in ("ack_rate", "ack_seconds", "chunks", "chunk_rate"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.steps:
        cfg["steps"] = [int(s) for s in args.steps.split(",")]
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.name = args.name or args.preset
    bench = Bench(args, config(args))
    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C, so the finally below stops every child.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        result = asyncio.run(asyncio.wait_for(bench.run(), args.max_seconds))
    finally:
        bench.cleanup()
    out = args.out or RESULTS / f"{result['date']}-{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(render_table(result))
    print(f"\nsaved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
