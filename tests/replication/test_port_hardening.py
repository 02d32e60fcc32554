"""Port 1500 under attack: idle, slow and garbage connections before authentication cost bounded memory and
time, are closed with one log line, store nothing, and never keep a legitimate agent out."""

from __future__ import annotations

import logging
import os
import random
import resource
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rehost.replication import protocol as p
from rehost.replication.gate import LOG_RATE, MAX_HELLO
from rehost.replication.server import ReplicationServer

from .conftest import REHOST, Env, ServerProcess, client, raw_tls, running
from .test_server import SID, file_sha, make_disk, send_disk, sha

MiB = 1024 * 1024
IDLE = 300
GARBAGE = 100
# What all connections not yet authenticated may add to the server's RSS: the gate's bound (64 × 128 KiB =
# 8 MiB, see replication.gate) plus allocator and interpreter slack. Before the gate, each idle connection
# cost 8 MiB: 400 of them took 3 GiB.
RSS_BOUND = 24 * MiB


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def closed_by_server(sock: socket.socket, within: float = 30.0) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``within`` seconds; what it sent is skipped."""
    sock.settimeout(within)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    return False


def read_reply(sock: socket.socket) -> p.Message | None:
    return p.FrameReader(sock, max_payload=64 * 1024).read()


# -- garbage: each opens a connection, sends something that is not an authenticating HELLO -----------------


def _hello_header(length: int) -> bytes:
    return p.HEADER.pack(p.MAGIC, p.MessageType.HELLO, 0, 0, length)


def _tcp(env: Env, address: tuple[str, int]) -> socket.socket:
    return socket.create_connection(address, timeout=30)


GARBAGE_KINDS: dict[str, Callable[[Env, tuple[str, int]], socket.socket]] = {}


def garbage(name: str) -> Callable[[Callable[[Env, tuple[str, int]], bytes]], None]:
    """Registers a kind: ``make(env, address)`` returns what to send; ``tls:`` kinds send it over TLS."""

    def register(make: Callable[[Env, tuple[str, int]], bytes]) -> None:
        def open_and_send(env: Env, address: tuple[str, int]) -> socket.socket:
            sock = raw_tls(env, address) if name.startswith("tls:") else _tcp(env, address)
            sock.sendall(make(env, address))
            return sock

        GARBAGE_KINDS[name] = open_and_send

    return register


garbage("not tls")(lambda env, a: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
garbage("random bytes")(lambda env, a: random.Random(1).randbytes(3000))
garbage("tls: random bytes")(lambda env, a: random.Random(2).randbytes(3000))
garbage("tls: invalid token")(
    lambda env, a: p.encode(p.Hello(SID, "0" * 64, [p.DiskInfo("/dev/sda", MiB)]))
)
garbage("tls: write first")(lambda env, a: p.encode(p.Write(0, 0, 4096, p.Encoding.RAW, b"\xff" * 4096)))
garbage("tls: ping first")(lambda env, a: p.encode(p.Ping(1)))
garbage("tls: oversized hello")(lambda env, a: _hello_header(p.MAX_PAYLOAD))
garbage("tls: hello past the limit")(lambda env, a: _hello_header(MAX_HELLO + 1) + b"\x00" * 1000)
garbage("tls: undecodable hello")(lambda env, a: _hello_header(8) + b"\xff" * 8)


def _tls_then_raw(env: Env, address: tuple[str, int]) -> socket.socket:
    """A TLS handshake, then bytes that are not TLS records."""
    sock = raw_tls(env, address)
    socket.socket.sendall(sock, random.Random(3).randbytes(500))
    return sock


GARBAGE_KINDS["tls handshake, then raw bytes"] = _tls_then_raw


# -- in-process server -------------------------------------------------------------------------------------


@pytest.fixture
def gated(env: Env) -> Iterator[ReplicationServer]:
    """A server with a short handshake bound and a small cap on connections not yet authenticated."""
    with running(env, handshake_timeout=1.5, max_pending=8) as srv:
        yield srv


def replicate_small_disk(env: Env, address: tuple[str, int], seed: int = 5) -> None:
    data = make_disk(2 * MiB + 4096, seed=seed)
    with client(env, address) as c:
        c.hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", len(data))])
        send_disk(c, 0, data)
        c.flush(1)
    assert file_sha(env.staging(SID)) == sha(data)


@pytest.mark.parametrize("kind", sorted(GARBAGE_KINDS))
def test_garbage_is_closed_with_one_log_line_and_nothing_stored(
    env: Env, gated: ReplicationServer, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rehost.replication")
    sock = GARBAGE_KINDS[kind](env, gated.address)
    assert closed_by_server(sock)
    sock.close()
    time.sleep(0.2)  # the log line may follow the close by a moment
    lines = [r for r in caplog.records if r.name.startswith("rehost.replication")]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert not (env.data_dir / "staging").exists()
    replicate_small_disk(env, gated.address)  # the server is still up and serving


def test_an_internal_error_costs_one_connection_not_the_gate(
    env: Env, gated: ReplicationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> bool:
        raise RuntimeError("a bug")

    monkeypatch.setattr("rehost.replication.server.verify_token", broken)
    sock = raw_tls(env, gated.address)
    sock.sendall(p.encode(p.Hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", MiB)])))
    assert closed_by_server(sock)
    monkeypatch.undo()
    replicate_small_disk(env, gated.address)


def test_a_flood_is_logged_one_line_a_connection_up_to_a_rate_then_summed_up(
    env: Env, gated: ReplicationServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rehost.replication")
    n = 3 * LOG_RATE
    socks = [GARBAGE_KINDS["not tls"](env, gated.address) for _ in range(n)]  # within a second or two
    for sock in socks:
        assert closed_by_server(sock)
        sock.close()
    time.sleep(2.5)  # the summary follows the second it sums up
    lines = [r.getMessage() for r in caplog.records if r.name == "rehost.replication.gate"]
    summaries = [int(m.split()[0]) for m in lines if "not logged one by one" in m]
    assert summaries, lines
    assert len(lines) - len(summaries) + sum(summaries) == n, lines


@pytest.mark.parametrize("length", [p.MAX_PAYLOAD, MAX_HELLO + 1])
def test_oversized_frame_before_auth_is_refused_on_its_header(
    env: Env, gated: ReplicationServer, length: int
) -> None:
    sock = raw_tls(env, gated.address)
    sock.sendall(_hello_header(length))  # the header alone: the server answers without waiting for more
    reply = read_reply(sock)
    assert isinstance(reply, p.Error) and reply.code == p.ErrorCode.PROTOCOL
    assert "exceeds" in reply.message
    assert closed_by_server(sock)


def test_refusals_before_auth_say_why(env: Env, gated: ReplicationServer) -> None:
    cases = [
        (p.Hello(SID, "0" * 64, [p.DiskInfo("/dev/sda", MiB)]), p.ErrorCode.AUTH),
        (p.Hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", MiB)], version=7), p.ErrorCode.VERSION),
        (p.Hello(SID, env.token(SID), []), p.ErrorCode.BAD_DISK),
        (p.Hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", 0)]), p.ErrorCode.BAD_DISK),
        (p.Flush(1), p.ErrorCode.PROTOCOL),
    ]
    for msg, code in cases:
        sock = raw_tls(env, gated.address)
        sock.sendall(p.encode(msg))
        reply = read_reply(sock)
        assert isinstance(reply, p.Error) and reply.code == code, (msg, reply)
        assert read_reply(sock) is None  # then closed
    assert not (env.data_dir / "staging").exists()


@pytest.mark.parametrize("stage", ["tcp", "tls", "slow hello"])
def test_silent_or_slow_connection_is_closed_after_the_handshake_bound(
    env: Env, gated: ReplicationServer, stage: str
) -> None:
    if stage == "tcp":
        sock: socket.socket = _tcp(env, gated.address)
        assert closed_by_server(sock)
        return
    sock = raw_tls(env, gated.address)
    if stage == "slow hello":  # a slow loris: one byte of a valid HELLO every 0.2 s (1.5 s allowed)
        frame = p.encode(p.Hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", MiB)]))
        try:
            for i in range(len(frame)):
                sock.sendall(frame[i : i + 1])
                time.sleep(0.2)
        except OSError:
            pass
        else:
            raise AssertionError("the whole HELLO was accepted a byte every 0.2 s")
    assert closed_by_server(sock)


def test_cap_closes_the_oldest_unauthenticated_connection(env: Env) -> None:
    with running(env, handshake_timeout=60, max_pending=8) as srv:
        idle = [raw_tls(env, srv.address) for _ in range(8)]  # the cap
        newer = raw_tls(env, srv.address)
        assert closed_by_server(idle[0], within=10)
        replicate_small_disk(env, srv.address)  # closes the (then) oldest, and is served
        assert closed_by_server(idle[1], within=10)
        assert not closed_by_server(idle[2], within=0.5)  # the others wait for their HELLO (60 s)
        for sock in [*idle, newer]:
            sock.close()


def test_cap_closes_a_connection_of_the_address_holding_the_most(env: Env) -> None:
    def from_(host: str) -> ssl.SSLSocket:
        sock = socket.create_connection(srv.address, timeout=30, source_address=(host, 0))
        return p.client_context(env.ca_pem).wrap_socket(sock, server_hostname=srv.address[0])

    with running(env, handshake_timeout=60, max_pending=8) as srv:
        agent = from_("127.0.0.2")  # the oldest, mid-handshake (say), from its own address
        flood = [from_("127.0.0.3") for _ in range(12)]
        assert all(closed_by_server(sock, within=10) for sock in flood[:4])  # the flood's own oldest
        assert not closed_by_server(agent, within=0.5)
        agent.sendall(p.encode(p.Hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", MiB)])))
        assert isinstance(read_reply(agent), p.HelloOk)
        for sock in [agent, *flood]:
            sock.close()


def test_a_token_cannot_pile_up_sessions(env: Env, gated: ReplicationServer) -> None:
    """A newer session supersedes the attached one; while that one is still ending (it lingers up to 2 s
    after its ERROR(SUPERSEDED) while its peer keeps the connection open), a third is refused BUSY."""
    disks = [p.DiskInfo("/dev/sda", MiB)]
    first = client(env, gated.address)
    first.hello(SID, env.token(SID), disks)
    second = client(env, gated.address)
    second.hello(SID, env.token(SID), disks)
    third = client(env, gated.address)
    with pytest.raises(p.ServerError) as err:
        third.hello(SID, env.token(SID), disks)
    assert err.value.code == p.ErrorCode.BUSY
    first.close()
    deadline = time.monotonic() + 30
    while True:  # once the first session has ended, a newer one is served again
        try:
            with client(env, gated.address) as c:
                c.hello(SID, env.token(SID), disks)
                c.flush(1)
            break
        except p.ServerError as exc:
            assert exc.code == p.ErrorCode.BUSY and time.monotonic() < deadline
            time.sleep(0.2)
    second.close()


# -- a real server process under a flood -------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_flood_of_idle_and_garbage_connections(env: Env) -> None:
    """300 idle connections (silent TCP, silent TLS, half a 64 KiB HELLO) and 100 garbage ones open at once:
    the server's RSS grows by less than RSS_BOUND, a legitimate agent still replicates a disk exactly, and
    the server logs no traceback."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024:  # this process holds IDLE + GARBAGE sockets at once
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    server = ServerProcess(env, extra_args=["--handshake-timeout", "60"]).start()  # idle ones stay pending
    try:
        assert server.proc is not None
        pid = server.proc.pid
        replicate_small_disk(env, server.address, seed=6)  # warm up: TLS, a session, staging
        time.sleep(1.5)  # the session's buffers are freed and its staging released
        before = rss(pid)
        socks: list[socket.socket] = []
        kinds = sorted(GARBAGE_KINDS)
        for i in range(IDLE + GARBAGE):
            try:
                if i % 4 == 0 and i // 4 < GARBAGE:
                    socks.append(GARBAGE_KINDS[kinds[i // 4 % len(kinds)]](env, server.address))
                elif i % 3 == 0:
                    socks.append(_tcp(env, server.address))  # silent from the start
                else:
                    sock = raw_tls(env, server.address)  # handshaken, then silent, or a HELLO half sent
                    if i % 3 == 1:
                        sock.sendall(_hello_header(MAX_HELLO) + b"\x00" * (MAX_HELLO // 2))
                    socks.append(sock)
            except (OSError, ssl.SSLError):
                pass  # closed by the gate while connecting: the cap at work
        time.sleep(1.0)
        during = rss(pid)
        replicate_small_disk(env, server.address, seed=7)  # while the flood is open
        assert server.proc.poll() is None
        grown = during - before
        print(f"RSS {before / MiB:.1f} MiB before, {during / MiB:.1f} MiB with {len(socks)} connections open")
        assert grown < RSS_BOUND, f"RSS grew by {grown / MiB:.1f} MiB"
        for sock in socks:
            sock.close()
    finally:
        server.kill()
    assert not any("Traceback" in line for line in server.lines), "\n".join(server.lines)
    assert sorted(os.listdir(env.data_dir / "staging")) == [SID]


@pytest.mark.parametrize(
    "extra, message",
    [(["--handshake-timeout", "0"], "--handshake-timeout"), (["--max-pending", "0"], "--max-pending")],
)
def test_cli_refuses_bad_limits(env: Env, extra: list[str], message: str) -> None:
    proc = subprocess.run(
        REHOST + ["replication-server", "--data-dir", str(env.data_dir), "--id", "rs-1", *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and message in proc.stderr
