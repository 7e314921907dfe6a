"""The dashboard and ``grainery top`` on a real 3-silo cluster with a token, under load.

One cluster for the module (its last test kills a silo): the dashboard refuses a request
without the token (plain HTTP), ``grainery top --once`` shows every member, and headless
Chromium, driven by Playwright, signs in, sees the three members, sees the charts grow,
looks a grain up, and sees a silo killed with -9 turn dead.

The browser test needs Playwright (dev extras) and a Chromium on the machine (Debian's
``chromium``; ``.ci/run`` installs it when it can); without them it is skipped and says why.
Screenshots go to ``$GRAINERY_SCREENSHOTS`` when set (``docs/screenshots`` regenerates the
README's), else to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grainery.client.channels import ClientSecurity
from grainery.silo.testing import TestCluster, TestStore
from tests.eventually import eventually_sync
from tests.integration.helpers import running_cluster

TOKEN = "dashboard-test-token"
KEYS = [f"m{i}" for i in range(12)]
REMINDED = ["r0", "r1", "r2"]  # grains with a reminder every second
_URL = re.compile(rb"dashboard of silo \S+ at (http://\S+)")


def dashboard_url(log_path: Path) -> str:
    match = _URL.search(log_path.read_bytes())
    assert match, f"no dashboard URL in {log_path}"
    return match.group(1).decode()


class Load:
    """A light, steady load (and a few failing calls) from a thread, until stopped."""

    def __init__(self, cluster: TestCluster) -> None:
        self._cluster = cluster
        self._stop = threading.Event()
        self.calls = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self._cluster.sync_client() as client:
            while not self._stop.is_set():
                for key in KEYS:
                    try:
                        client.get_grain("Meter", key).hit(1)
                        self.calls += 1
                    except Exception:  # noqa: BLE001 - a killed silo's grains move: go on
                        pass
                try:  # an event on a stream a grain listens to
                    client.get_stream("beats", f"l{self.calls % 2}").publish({"n": self.calls})
                except Exception:  # noqa: BLE001 - as above
                    pass
                try:  # now and then, a failing call (its grains on more than one silo)
                    client.get_grain("Meter", f"failing-{self.calls % 3}").fail()
                except Exception:  # noqa: BLE001 - failing is the point
                    pass
                self._stop.wait(0.05)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture(scope="module")
def cluster(store: TestStore) -> Iterator[TestCluster]:
    test_cluster = TestCluster(
        store, ["tests.grains.dashboard_probes"], size=3,
        extra_args=["--token", TOKEN, "--dashboard-port", "0"],
        security=ClientSecurity(token=TOKEN),
    )
    with running_cluster(test_cluster) as running:
        running.wait_stable(3)  # before the load: no grain placed while a silo was missing
        with running.sync_client() as client:
            for key in REMINDED:
                client.get_grain("Meter", key).remind()
        with Load(running):
            yield running


def _get(url: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - a loopback URL
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_dashboard_refuses_a_request_without_the_token(cluster: TestCluster) -> None:
    url = dashboard_url(cluster.silos[0].log_path)
    for path in ("", "api/overview", "api/grain?type=Meter&key=m1"):
        assert _get(url + path)[0] == 401, path
        assert _get(url + path, Authorization="Bearer wrong")[0] == 401, path
    status, body = _get(url + "api/overview", Authorization=f"Bearer {TOKEN}")
    assert status == 200
    view = json.loads(body)
    assert sorted(m["silo_id"] for m in view["members"]) == ["silo1", "silo2", "silo3"]


def test_a_lookup_says_where_the_grain_lives_and_what_its_activation_does(
    cluster: TestCluster,
) -> None:
    url = dashboard_url(cluster.silos[0].log_path)
    hosts: dict[str, str] = {}

    def looked_up(key: str) -> dict[str, Any]:
        with cluster.sync_client() as client:
            hosts[key] = client.get_grain("Meter", key).where()
        status, body = _get(f"{url}api/grain?type=Meter&key={key}",
                            Authorization=f"Bearer {TOKEN}")
        assert status == 200, body
        found: dict[str, Any] = json.loads(body)
        assert found["active"] and found["silo_id"] == hosts[key], found
        assert found["state_bytes"] > 0
        # From the hosting silo, local or not: its recent calls under the load.
        activation = found["activation"]
        assert activation["phase"] == "active" and activation["recent_calls"] > 0, found
        return found

    for key in KEYS:  # grains on the serving silo and on the two others
        eventually_sync(lambda key=key: looked_up(key), 10, f"a lookup of Meter/{key}")
    assert len(set(hosts.values())) == 3
    status, body = _get(f"{url}api/grain?type=Nope&key=x", Authorization=f"Bearer {TOKEN}")
    assert status == 404 and b"Meter" in body  # names the known types
    status, body = _get(f"{url}api/grain?type=Meter&key=never-called",
                        Authorization=f"Bearer {TOKEN}")
    found = json.loads(body)
    assert status == 200 and not found["active"] and found["activation"] is None
    assert found["ring_owner"] in hosts.values() and found["state_bytes"] == 0
    assert not found["stateless_worker"] and found["reminders"] == []
    status, body = _get(f"{url}api/grain?type=Meter&key=r1", Authorization=f"Bearer {TOKEN}")
    (beat,) = json.loads(body)["reminders"]
    assert (beat["name"], beat["period"], beat["runtime"], beat["disabled"]) == (
        "beat", 1.0, False, "")
    status, body = _get(f"{url}api/grain?type=Helper&key=h", Authorization=f"Bearer {TOKEN}")
    assert status == 200 and json.loads(body)["stateless_worker"] is True
    assert found["journal"] == []
    # A durable agent's journal: its steps, newest first.
    with cluster.sync_client() as client:
        assert client.get_grain("Planner", "p1").plan(3) == [0, 2, 4]
    status, body = _get(f"{url}api/grain?type=Planner&key=p1", Authorization=f"Bearer {TOKEN}")
    journal = json.loads(body)["journal"]
    seqs = [entry["seq"] for entry in journal]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) >= 3
    assert all(any(f"s{i}" in entry["data"] for entry in journal) for i in range(3)), journal


def test_grainery_top_once_shows_every_member(cluster: TestCluster) -> None:
    def frame() -> str:
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "grainery", "top", "--address", cluster.addresses[1],
             "--token", TOKEN, "--once"], capture_output=True, text=True, timeout=60,
            check=True,
        )
        out = done.stdout
        # Every member, live, and the load's grains among the busiest.
        if all(re.search(rf"^silo{i} .* active ", out, re.M) for i in (1, 2, 3)) and (
            "Meter/m" in out
        ):
            return out
        raise AssertionError(out)

    out = eventually_sync(frame, 30, "grainery top showing 3 active silos and busy grains")
    assert "calls/s" in out and "p99" in out and "reminder ticks/s" in out

    def as_json() -> bool:
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "grainery", "top", "--target", cluster.addresses[0],
             "--token", TOKEN, "--once", "--json"], capture_output=True, text=True,
            timeout=60, check=True,
        )
        view = json.loads(done.stdout)
        assert {m["state"] for m in view["members"]} == {"active"}
        assert max(view["series"]["calls_per_second"] or [0]) > 0, view["series"]
        assert max(view["series"]["stream_delivered_per_second"] or [0]) > 0, view["series"]
        return True

    eventually_sync(as_json, 30, "grainery top --json showing the call rate")
    # Without the token, a clear refusal and a non-zero exit.
    refused = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "grainery", "top", "--address", cluster.addresses[0], "--once"],
        capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if k != "GRAINERY_TOKEN"},
    )
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr, refused.stderr


def test_grainery_top_keeps_trying_a_silo_it_cannot_reach(tmp_path: Path) -> None:
    from grainery.silo.storage.embedded import free_port

    out = tmp_path / "top.out"
    with out.open("wb") as sink:
        top = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "grainery", "top", "--address", f"127.0.0.1:{free_port()}",
             "--interval", "0.2", "--timeout", "1"], stdout=sink, stderr=subprocess.STDOUT,
        )
        try:
            eventually_sync(lambda: out.read_bytes().count(b"cannot reach") >= 2, 20,
                            "grainery top retrying an unreachable silo")
            assert top.poll() is None  # still running
        finally:
            top.kill()
            top.wait(10)


def test_a_busy_dashboard_port_is_a_one_line_startup_error() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "grainery", "silo", "--grains", "tests.grains.dashboard_probes",
             "--port", "0", "--dashboard-port", str(port), "--redis", "redis://127.0.0.1:1/0"],
            capture_output=True, text=True, timeout=60, check=False,
        )
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and f"dashboard port 127.0.0.1:{port} is in use" in line, line


# ----- the browser ---------------------------------------------------------------
def chromium_path() -> str | None:
    for name in (os.environ.get("GRAINERY_CHROMIUM"), "chromium", "chromium-browser"):
        if name and (found := shutil.which(name)):
            return found
    return None


def _browser() -> tuple[Any, str]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser test: Playwright is not installed (pip install -e '.[dev]')")
    path = chromium_path()
    if path is None:
        pytest.skip("browser test: no Chromium on this machine (apt-get install chromium, "
                    "or set GRAINERY_CHROMIUM to a Chromium binary)")
    return sync_playwright, path


def test_the_dashboard_in_a_browser(cluster: TestCluster, tmp_path: Path) -> None:
    sync_playwright, executable = _browser()
    shots = Path(os.environ.get("GRAINERY_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    url = dashboard_url(cluster.silos[0].log_path)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{url}?token={TOKEN}")  # signs in: a cookie, then the page
            assert "token" not in page.url

            def state_of(silo: str) -> str | None:
                value = page.get_attribute(f'#members tr[data-silo="{silo}"]', "data-state",
                                           timeout=2000)
                return value

            eventually_sync(
                lambda: all(state_of(f"silo{i}") == "active" for i in (1, 2, 3)), 20,
                "the page listing three active members",
            )

            def points() -> int:
                return int(page.get_attribute("#chart-calls", "data-points") or 0)

            before = eventually_sync(points, 10, "the calls chart drawn")
            eventually_sync(lambda: points() > before, 10, "the calls chart growing")
            # A few more seconds of history, for a screenshot worth showing in the README.
            eventually_sync(lambda: points() >= 8, 15, "eight seconds of history on the chart")
            for chart, what in (("calls", "a call rate"), ("reminders", "reminder ticks"),
                                ("streams", "stream events published"),
                                ("stream-lag", "a stream delivery lag")):
                eventually_sync(
                    lambda chart=chart: float(
                        page.get_attribute(f"#chart-{chart}", "data-last") or 0) > 0,
                    10, f"{what} above zero on the chart",
                )
            # The lookup names the silo the grain really runs on.
            page.fill("#lookup-type", "Meter")
            page.fill("#lookup-key", "m3")

            def lookup_names_the_host() -> bool:
                with cluster.sync_client() as client:
                    host = client.get_grain("Meter", "m3").where()
                page.click("#lookup button")
                shown = page.text_content('dd[data-field="lives on"]', timeout=2000) or ""
                if not shown.startswith(f"{host} ("):
                    raise AssertionError(f"shown {shown!r}, lives on {host}")
                return True

            eventually_sync(lookup_names_the_host, 10, "the lookup showing where Meter/m3 lives")
            # A durable agent's journal, as rows under the lookup.
            with cluster.sync_client() as client:
                client.get_grain("Planner", "browser").plan(2)
            page.fill("#lookup-type", "Planner")
            page.fill("#lookup-key", "browser")
            page.click("#lookup button")
            eventually_sync(lambda: page.locator("#lookup-journal tbody tr").count() == 4, 10,
                            "the agent's journal (run, two steps, end) under the lookup")
            eventually_sync(
                lambda: {"steps ok", "runs started", "runs completed"} <= set(
                    (page.get_attribute("#chart-durable", "data-series") or "").split(",")),
                10, "the durable agents' steps and runs on their chart",
            )
            eventually_sync(lambda: page.locator("#busiest tbody tr").count() > 0, 10,
                            "the busiest grains listed")
            page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

            victim = cluster.silos[2]
            victim.kill()  # kill -9
            eventually_sync(lambda: state_of(victim.name) == "dead", 30,
                            f"{victim.name} shown dead after kill -9")
            page.screenshot(path=str(shots / "dashboard-silo-dead.png"), full_page=True)
            assert errors == [], errors
        finally:
            browser.close()
