"""Console sign-in is throttled per source address and per access key after repeated failures.

Over real HTTP against a real server; each client connects from its own loopback address (127.0.0.x), so
the per-address and per-key counters can be told apart. The back-off's expiry is tested on the throttle
itself with a clock of the test's own.
"""

from __future__ import annotations

from console.conftest import ConsoleEnv
from console.httpclient import ConsoleClient, Response
from rehost.console.throttle import SignInThrottle

NOT_VALID = "The access key ID or secret access key is not valid."


def _client(env: ConsoleEnv, address: str) -> ConsoleClient:
    return ConsoleClient(env.endpoint, source_address=address)


def _signed_in(resp: Response) -> bool:
    return resp.status == 303 and any(c.startswith("rehost_console=") for c in resp.set_cookies)


def test_failures_from_one_address_lock_that_address_out(console_env: ConsoleEnv) -> None:
    attacker = _client(console_env, "127.0.0.21")
    for n in range(5):
        resp = attacker.sign_in(f"AKIAGUESS{n:011d}", "wrong")
        assert resp.status == 401 and NOT_VALID in resp.body
    # Now even the right key is refused from that address, before its secret is looked at.
    refused = attacker.sign_in(*console_env.admin_key)
    assert refused.status == 429 and not _signed_in(refused)
    assert "Too many failed sign-in attempts from this address. Try again in 5 minutes." in refused.body
    assert 0 < int(refused.headers["retry-after"]) <= 300
    assert "Access key ID" in refused.body  # the sign-in page itself, not an error page
    assert attacker.get("/console/servers").status == 303  # no session
    # Other addresses are not affected, nor is the key those guesses did not name.
    assert _signed_in(_client(console_env, "127.0.0.22").sign_in(*console_env.admin_key))


def test_failures_for_one_key_lock_that_key_out_from_everywhere(console_env: ConsoleEnv) -> None:
    key_id, secret = console_env.readonly_key
    for n in range(5):  # each guess from another address: no address reaches its own limit
        resp = _client(console_env, f"127.0.0.{31 + n}").sign_in(key_id, f"guess-{n}")
        assert resp.status == 401 and NOT_VALID in resp.body
    refused = _client(console_env, "127.0.0.36").sign_in(key_id, secret)
    assert refused.status == 429 and not _signed_in(refused)
    assert "Too many failed sign-in attempts for this access key." in refused.body
    # A key ID that does not exist is counted the same way, so a lockout tells nothing about the key.
    for n in range(5):
        assert _client(console_env, f"127.0.0.{41 + n}").sign_in("AKIANOSUCHKEY0000000", "x").status == 401
    assert _client(console_env, "127.0.0.46").sign_in("AKIANOSUCHKEY0000000", "x").status == 429
    # Another key signs in from the same addresses.
    assert _signed_in(_client(console_env, "127.0.0.36").sign_in(*console_env.admin_key))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fail(throttle: SignInThrottle, address: str, key: str) -> None:
    assert throttle.begin(address, key) is None
    throttle.end(address, key, ok=False)


def test_throttle_window_backoff_and_bounds() -> None:
    clock = Clock()
    throttle = SignInThrottle(limit=5, window=300, backoff=300, max_entries=100, clock=clock)
    for _ in range(4):
        _fail(throttle, "10.0.0.1", "AKIA1")
        clock.now += 100  # the first failures age out of the 5-minute window
    _fail(throttle, "10.0.0.1", "AKIA1")
    assert throttle.begin("10.0.0.1", "AKIA1") is None
    throttle.end("10.0.0.1", "AKIA1", ok=True)
    for _ in range(5):
        _fail(throttle, "10.0.0.2", "AKIA2")
    refusal = throttle.begin("10.0.0.2", "AKIA3")
    assert refusal is not None and refusal[1] == 300 and "from this address" in refusal[0]
    refused_key = throttle.begin("10.0.0.9", "AKIA2")
    assert refused_key is not None and "for this access key" in refused_key[0]
    clock.now += 299
    assert throttle.begin("10.0.0.2", "AKIA3") is not None
    clock.now += 1  # the back-off is over
    assert throttle.begin("10.0.0.2", "AKIA3") is None and throttle.begin("10.0.0.9", "AKIA2") is None
    throttle.end("10.0.0.2", "AKIA3", ok=True)
    throttle.end("10.0.0.9", "AKIA2", ok=True)

    # A success clears its key's failures (not its address's).
    for _ in range(4):
        _fail(throttle, "10.0.0.5", "AKIA5")
    assert throttle.begin("10.0.0.6", "AKIA5") is None
    throttle.end("10.0.0.6", "AKIA5", ok=True)
    _fail(throttle, "10.0.0.7", "AKIA5")
    assert throttle.begin("10.0.0.8", "AKIA5") is None
    throttle.end("10.0.0.8", "AKIA5", ok=True)
    assert throttle.begin("10.0.0.5", "AKIA6") is None  # 4 failures: one more try for that address
    throttle.end("10.0.0.5", "AKIA6", ok=False)
    assert throttle.begin("10.0.0.5", "AKIA7") is not None

    # Memory is bounded: a flood of addresses and keys keeps at most max_entries of each, locks first.
    for _ in range(5):
        _fail(throttle, "10.9.9.9", "AKIAFLOOD")
    for n in range(1000):
        _fail(throttle, f"10.1.{n // 250}.{n % 250}", f"AKIARANDOM{n}")
    assert len(throttle._addresses.records) <= 100 and len(throttle._keys.records) <= 100
    assert throttle.begin("10.9.9.9", "") is not None and throttle.begin("10.0.0.0", "AKIAFLOOD") is not None


def test_attempts_in_flight_count_against_the_limit() -> None:
    throttle = SignInThrottle(limit=5, clock=Clock())
    # Five parallel guesses are let through; the sixth waits for them, whatever they turn out to be.
    for n in range(5):
        assert throttle.begin("10.0.0.1", f"AKIA{n}") is None
    refusal = throttle.begin("10.0.0.1", "AKIA9")
    assert refusal is not None and refusal[1] == 1
    for n in range(4):
        throttle.end("10.0.0.1", f"AKIA{n}", ok=False)
    throttle.end("10.0.0.1", "AKIA4", ok=True)  # one guess was right: four failures stand
    assert throttle.begin("10.0.0.1", "AKIA9") is None
    throttle.end("10.0.0.1", "AKIA9", ok=False)
    refusal = throttle.begin("10.0.0.1", "AKIA4")
    assert refusal is not None and refusal[1] == 300
