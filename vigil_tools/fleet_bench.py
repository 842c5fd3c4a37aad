"""The fleet measured (issue 15): real `vigil serve` daemons behind a real `vigil relay`.

    python -m vigil_tools.fleet_bench [--daemons 3] [--seconds 12] [--json out.json]

1. Delivery. N daemons (instances `d1`..`dN`, a tiny random model, one looping file camera each,
   thresholds so low that every window publishes an alert), `vigil relay` as a child process in
   front of them, and an `AlertSubscriber` on the relay from seq 0. While alerts flow: SIGKILL
   daemon d2 and start it again; later SIGKILL the relay and start it again on the same ports.
   Then SIGTERM every daemon, let the subscriber drain, and compare what it delivered for each
   instance with that daemon's journal: every alert exactly once, in seq order, none missing.
2. Relay throughput: a PUB that blocks at the high-water mark (XPUB_NODROP) sends real-sized
   alert messages as fast as the path accepts them, once straight to a SUB and once through the
   relay process; messages/s at the SUB.
3. Relay latency: messages at a steady rate reach two SUBs of one receiver, one connected to the
   publisher, one to the relay; the relay's added latency is the difference per message (p50,
   p95), so the publisher's and the receiver's own costs cancel out.

Everything runs on 127.0.0.1. A tool (never imported by the service); numbers go to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import zmq

from .harness import REPO, DaemonProcess, base_config, free_port, tiny_checkpoint, wait_until

log = logging.getLogger(__name__)


# ---- the relay as a child process ------------------------------------------------------------
class RelayProcess:
    """`vigil relay` as a child (so that it can be SIGKILLed), on fixed ports."""

    def __init__(self, workdir: Path, daemons: dict[str, dict], endpoint: str,
                 replay_endpoint: str) -> None:
        self.args = ["--endpoint", endpoint, "--replay-endpoint", replay_endpoint]
        for name, cfg in daemons.items():
            self.args += ["--daemon", cfg["alerts"]["endpoint"],
                          "--replay", f"{name}={cfg['alerts']['replay_endpoint']}"]
        self.log_path = workdir / "relay.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "RelayProcess":
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "streamer.cli", "relay",
                                          *self.args], cwd=REPO, stdout=out,
                                         stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert wait_until(lambda: "relay: alerts on" in self.log_path.read_text()[offset:], 30), \
            self.log_path.read_text()[-2000:]
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


# ---- 1. delivery across SIGKILLs -------------------------------------------------------------
def _camera_file(path: Path) -> Path:
    from .bench_pipeline import Encoder, write_camera_video

    return write_camera_video(path, 160, 120, 12, 48, "fight", 1,
                              Encoder("opencv", "mp4v", "mp4v"))


class Collector(threading.Thread):
    """An AlertSubscriber on the relay, in its own thread (sockets stay in one thread)."""

    def __init__(self, endpoint: str, replay_endpoint: str) -> None:
        super().__init__(name="fleet-subscriber", daemon=True)
        self.endpoint, self.replay_endpoint = endpoint, replay_endpoint
        self.received: list[dict] = []
        self.stop_flag = threading.Event()
        self.started_ok = threading.Event()
        self.gaps: list = []
        self.resets = 0
        self.replayed: dict = {}
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        from streamer.subscriber import AlertSubscriber

        try:
            with AlertSubscriber(self.endpoint, self.replay_endpoint, since=0,
                                 heartbeat_timeout_s=3.0) as sub:
                self.started_ok.set()
                while not self.stop_flag.is_set():
                    msg = sub.poll(0.2)
                    if msg is not None:
                        msg["_received"] = time.monotonic()
                        self.received.append(msg)
                self.gaps, self.resets = list(sub.gap_log), sub.resets
                self.replayed = {name: st.replayed for name, st in sub.streams.items()}
        except BaseException as exc:   # reported by the caller
            self.error = exc
            self.started_ok.set()


def measure_delivery(work: Path, n_daemons: int = 3, seconds: float = 12.0) -> dict[str, Any]:
    """The delivery run (see the module docstring). Returns the per-instance comparison."""
    from streamer.journal import Journal

    ckpt = tiny_checkpoint(work / "tiny.pt")
    daemons: dict[str, DaemonProcess] = {}
    configs: dict[str, dict] = {}
    for i in range(1, n_daemons + 1):
        name = f"d{i}"
        video = _camera_file(work / f"{name}.mp4")
        cfg = base_config(work / name / "data", ckpt, {f"cam{i}": str(video)}, always_on=True,
                          updates=True, stride=4)
        cfg["instance"] = name
        cfg["evidence"] = {"enabled": False}
        configs[name] = cfg
        daemons[name] = DaemonProcess(work / name, cfg)
    relay_ep = f"tcp://127.0.0.1:{free_port()}"
    relay_replay = f"tcp://127.0.0.1:{free_port()}"
    relay = RelayProcess(work, configs, relay_ep, relay_replay)
    events: list[tuple[float, str]] = []
    collector = Collector(relay_ep, relay_replay)
    try:
        t0 = time.monotonic()
        for d in daemons.values():
            d.start()
        for d in daemons.values():
            d.wait_ready(120)
        events.append((time.monotonic() - t0, "daemons ready"))
        relay.start()
        collector.start()
        collector.started_ok.wait(30)
        if collector.error:
            raise collector.error
        events.append((time.monotonic() - t0, "relay + subscriber up"))
        time.sleep(seconds)
        victim = daemons["d2" if "d2" in daemons else "d1"]
        victim.kill()
        events.append((time.monotonic() - t0, "SIGKILL d2"))
        time.sleep(2.0)
        after = time.monotonic()
        victim.start()
        victim.wait_ready(120, after=after)
        events.append((time.monotonic() - t0, "d2 restarted (ready)"))
        time.sleep(seconds)
        relay.kill()
        events.append((time.monotonic() - t0, "SIGKILL relay"))
        time.sleep(2.0)
        relay.start()
        events.append((time.monotonic() - t0, "relay restarted"))
        time.sleep(seconds)
        for d in daemons.values():
            d.stop()
        events.append((time.monotonic() - t0, "daemons stopped (SIGTERM)"))
        flow_s = events[-1][0] - events[1][0]
        # The relay cannot forward what was published while it was down: the subscriber replays
        # it; the last alerts (shutdown ends) are in the journals; wait for the subscriber to
        # hold everything each journal holds (or 60 s).
        last = {}
        for name, cfg in configs.items():
            with Journal(Path(cfg["data_dir"]) / "journal.sqlite3") as j:
                last[name] = j.last_seq()
        def caught_up() -> bool:
            got: dict[str, int] = {}
            for m in list(collector.received):
                got[m["instance"]] = max(got.get(m["instance"], 0), m["seq"])
            return all(got.get(n, 0) >= last[n] for n in last)

        # The shutdown ends normally arrive live; what did not is replayed, which needs the
        # daemons' replay sockets: start them again (as systemd would) if needed.
        if not wait_until(caught_up, 5, interval=0.5):
            events.append((time.monotonic() - t0, "restarting daemons for replay"))
            for d in daemons.values():
                after = time.monotonic()
                d.start()
                d.wait_ready(120, after=after)
        wait_until(caught_up, 60, interval=0.5)
        collector.stop_flag.set()
        collector.join(10)
        for d in daemons.values():
            d.stop()
        events.append((time.monotonic() - t0, "drained"))
    finally:
        collector.stop_flag.set()
        relay.stop()
        for d in daemons.values():
            d.close()
    # Compare with the journals, per instance, up to what each held at the first stop.
    per: dict[str, Any] = {}
    for name, cfg in configs.items():
        with Journal(Path(cfg["data_dir"]) / "journal.sqlite3") as j:
            rows = []
            while True:
                page = j.since(rows[-1]["seq"] if rows else 0, 1000)
                if not page:
                    break
                rows += page
        journal_seqs = [r["seq"] for r in rows if r["seq"] <= last[name]]
        got = [m["seq"] for m in collector.received if m["instance"] == name
               and m["seq"] <= last[name]]
        events_ok = all(m["event_id"] == r["event_id"] for m, r in
                        zip((m for m in collector.received if m["instance"] == name), rows))
        per[name] = {"journal": len(journal_seqs), "delivered": len(got),
                     "exactly_once_in_order": got == journal_seqs,
                     "duplicates": len(got) - len(set(got)),
                     "missing": len(set(journal_seqs) - set(got)),
                     "event_ids_match": events_ok,
                     "replayed": collector.replayed.get(name),
                     "restart_ends": sum(1 for r in rows if r.get("reason") == "restart")}
    return {"instances": per, "gaps": collector.gaps, "resets": collector.resets,
            "timeline": events,
            "flow_seconds": round(flow_s, 1),
            "alerts_per_s": round(sum(v["journal"] for v in per.values()) / flow_s, 1)}


# ---- 2. and 3. the relay's throughput and added latency --------------------------------------
def _message(seq: int, t_ns: int = 0) -> list[bytes]:
    body = {"schema": "vigil.alert/2", "seq": seq, "journal_id": "j" * 32, "instance": "d1",
            "type": "update", "event_id": "cam1-20261124T101502Z-0007", "camera": "cam1",
            "label": "fight", "score": 0.91, "box": [0.21, 0.33, 0.58, 0.97],
            "box_px": [403, 356, 1114, 1048], "frame_size": [1920, 1080],
            "window": {"start": "2026-11-24T10:15:01.12Z", "end": "2026-11-24T10:15:01.76Z"},
            "published_at": "2026-11-24T10:15:02.03Z", "latency_s": 0.27,
            "snapshot": "events/cam1/2026-11-24/cam1-20261124T101502Z-0007/start.jpg",
            "clip": None, "reason": None, "t_ns": t_ns}
    return [b"alert.cam1.fight", json.dumps(body).encode()]


def _heartbeat() -> list[bytes]:
    body = {"schema": "vigil.heartbeat/2", "seq": 0, "journal_id": "j" * 32, "instance": "d1",
            "uptime_s": 0.0, "sent_at": "2026-11-24T10:15:02.03Z"}
    return [b"heartbeat", json.dumps(body).encode()]


def measure_relay(work: Path, messages: int = 50000, latency_rate: float = 1000.0,
                  latency_seconds: float = 10.0) -> dict[str, Any]:
    """Throughput (direct and through the relay) and the relay's added latency."""
    ctx = zmq.Context()
    pub_port = free_port()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.XPUB_NODROP, 1)       # block at the HWM: measure the path, not drops
    pub.setsockopt(zmq.SNDHWM, 10000)
    pub.bind(f"tcp://127.0.0.1:{pub_port}")
    relay_ep = f"tcp://127.0.0.1:{free_port()}"
    relay = RelayProcess(work, {"d1": {"alerts": {
        "endpoint": f"tcp://127.0.0.1:{pub_port}",
        "replay_endpoint": f"tcp://127.0.0.1:{free_port()}"}}}, relay_ep,
        f"tcp://127.0.0.1:{free_port()}").start()
    out: dict[str, Any] = {"message_bytes": sum(map(len, _message(1)))}
    try:
        def sub_to(endpoint: str) -> zmq.Socket:
            s = ctx.socket(zmq.SUB)
            s.setsockopt(zmq.RCVHWM, 100000)
            s.setsockopt(zmq.SUBSCRIBE, b"")
            s.connect(endpoint)
            return s

        def joined(sock: zmq.Socket) -> None:
            """Send probes until `sock` receives one (slow joiner), then drain."""
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                _drain_subscriptions(pub)
                pub.send_multipart(_heartbeat())     # the relay forwards only what parses
                if sock.poll(100):
                    while sock.poll(200):
                        sock.recv_multipart()
                    return
            raise RuntimeError("subscriber never joined")

        for path, endpoint in (("direct", f"tcp://127.0.0.1:{pub_port}"), ("relay", relay_ep)):
            sub = sub_to(endpoint)
            joined(sub)
            done = threading.Event()
            stamps: dict[str, float] = {}

            def receive() -> None:
                n = 0
                while n < messages:
                    if sub.poll(10000) == 0:
                        break
                    sub.recv_multipart()
                    n += 1
                    if n == 1:
                        stamps["first"] = time.perf_counter()
                stamps["last"], stamps["n"] = time.perf_counter(), n
                done.set()

            rx = threading.Thread(target=receive, daemon=True)
            rx.start()
            frames = _message(1)
            for _ in range(messages):
                pub.send_multipart(frames)
            done.wait(120)
            rx.join(5)
            rate = (stamps["n"] - 1) / max(stamps["last"] - stamps["first"], 1e-9)
            out[f"{path}_msgs_per_s"] = round(rate)
            out[f"{path}_received"] = stamps["n"]
            sub.close(linger=0)

        # Latency: both SUBs in one receiver thread, the same messages.
        direct, via = sub_to(f"tcp://127.0.0.1:{pub_port}"), sub_to(relay_ep)
        joined(direct)
        joined(via)
        arrivals: dict[str, dict[int, int]] = {"direct": {}, "relay": {}}
        stop = threading.Event()

        def receive_both() -> None:
            poller = zmq.Poller()
            poller.register(direct, zmq.POLLIN)
            poller.register(via, zmq.POLLIN)
            while not stop.is_set():
                for sock, _ in poller.poll(100):
                    frames = sock.recv_multipart()
                    now = time.perf_counter_ns()
                    if frames[0] != b"alert.cam1.fight":
                        continue
                    seq = json.loads(frames[1])["seq"]
                    arrivals["direct" if sock is direct else "relay"][seq] = now

        rx = threading.Thread(target=receive_both, daemon=True)
        rx.start()
        n = int(latency_rate * latency_seconds)
        t_start = time.perf_counter()
        sent_at: dict[int, int] = {}
        for seq in range(1, n + 1):
            target = t_start + seq / latency_rate
            while time.perf_counter() < target:
                time.sleep(max(0.0, min(0.0005, target - time.perf_counter())))
            sent_at[seq] = time.perf_counter_ns()
            pub.send_multipart(_message(seq, sent_at[seq]))
        time.sleep(1.0)
        stop.set()
        rx.join(5)
        both = [s for s in arrivals["relay"] if s in arrivals["direct"]]
        added = sorted((arrivals["relay"][s] - arrivals["direct"][s]) / 1e6 for s in both)
        total_relay = sorted((arrivals["relay"][s] - sent_at[s]) / 1e6 for s in both)
        total_direct = sorted((arrivals["direct"][s] - sent_at[s]) / 1e6 for s in both)
        out.update({
            "latency_messages": n, "latency_rate_per_s": latency_rate,
            "latency_received_both": len(both),
            "added_ms_p50": round(_q(added, 0.5), 3), "added_ms_p95": round(_q(added, 0.95), 3),
            "direct_ms_p50": round(_q(total_direct, 0.5), 3),
            "direct_ms_p95": round(_q(total_direct, 0.95), 3),
            "relay_ms_p50": round(_q(total_relay, 0.5), 3),
            "relay_ms_p95": round(_q(total_relay, 0.95), 3)})
        direct.close(linger=0)
        via.close(linger=0)
    finally:
        relay.stop()
        pub.close(linger=0)
        ctx.term()
    return out


def _drain_subscriptions(pub: zmq.Socket) -> None:
    while True:
        try:
            pub.recv(zmq.NOBLOCK)
        except zmq.Again:
            return


def _q(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] \
        if len(values) > 1 else values[0]


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vigil_tools.fleet_bench",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--daemons", type=int, default=3)
    p.add_argument("--seconds", type=float, default=12.0,
                   help="alerts flow this long before each SIGKILL and after the last")
    p.add_argument("--messages", type=int, default=50000, help="throughput run size")
    p.add_argument("--skip-delivery", action="store_true")
    p.add_argument("--skip-relay", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    work = Path(tempfile.mkdtemp(prefix="vigil-fleet-"))
    result: dict[str, Any] = {"command": " ".join(["python -m vigil_tools.fleet_bench",
                                                   *(argv if argv is not None else sys.argv[1:])]),
                              "cpus": os.cpu_count(), "workdir": str(work)}
    if not args.skip_delivery:
        result["delivery"] = measure_delivery(work, args.daemons, args.seconds)
        print(json.dumps(result["delivery"], indent=1), flush=True)
    if not args.skip_relay:
        result["relay"] = measure_relay(work, args.messages)
        print(json.dumps(result["relay"], indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    ok = all(v["exactly_once_in_order"] for v in result.get("delivery", {}).get(
        "instances", {}).values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
